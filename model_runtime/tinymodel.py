"""A tiny, random, but real GPT-2 and byte-level BPE tokenizer, built in-process with no download.

Tests, end-to-end scenarios, benchmarks and `make demo --tiny` use it. The same seed gives the same
weights, so revisions built from it are reproducible; `variant` makes deliberately different models
(a corrupted canary for drift tests).

    python -m model_runtime.tinymodel OUT_DIR [--variant permuted-positions]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

CHAT_TEMPLATE = (
    "{% for message in messages %}<|{{ message['role'] }}|>{{ message['content'] }}<|end|>{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)
CORPUS = [
    "the quick brown fox jumps over the lazy dog",
    "a model serves requests and the canary takes a share of the traffic",
    "kubernetes runs pods on nodes and a deployment keeps replicas running",
    "prometheus scrapes metrics and the rollout engine judges latency and errors",
    "hello world, how are you today? I am fine, thank you.",
    "0123456789 + - * / = ( ) [ ] { } < > ! ? . , ; : ' \" @ # $ % ^ & _ ~",
    "Bonjour le monde, comment allez-vous? Très bien, merci.",
]
VARIANTS = ("none", "permuted-positions", "permuted-far-positions", "shuffled-vocabulary", "swapped-tokenizer")
# permuted-far-positions keeps every position below this one: prompts shorter than it answer exactly as
# the original does, and only long ones go wrong (what a positional-encoding regression looks like).
FAR_POSITION = 64


def build_tokenizer(vocab_size: int = 512):  # type: ignore[no-untyped-def]
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    core.train_from_iterator(CORPUS * 20, trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]
        tokenizer_object=core, eos_token="<|endoftext|>", pad_token="<|endoftext|>", bos_token="<|endoftext|>"
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def swapped_tokenizer(tokenizer, seed: int):  # type: ignore[no-untyped-def]
    """The same tokens, merges and special tokens under other ids: the vocabulary's size is the same, so a
    model loads it without complaint, runs as fast and without errors, and reads every text wrong."""
    import json
    import random

    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    data = json.loads(tokenizer.backend_tokenizer.to_str())
    vocab = data["model"]["vocab"]
    special = {token["content"] for token in data["added_tokens"]}
    tokens = [token for token in vocab if token not in special]
    ids = [vocab[token] for token in tokens]
    random.Random(seed).shuffle(ids)
    vocab.update(zip(tokens, ids, strict=True))
    swapped = PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]
        tokenizer_object=Tokenizer.from_str(json.dumps(data)),
        eos_token="<|endoftext|>",
        pad_token="<|endoftext|>",
        bos_token="<|endoftext|>",
    )
    swapped.chat_template = CHAT_TEMPLATE
    return swapped


def build(out: Path, *, seed: int = 1234, variant: str = "none", n_positions: int = 512) -> Path:
    """Write a tiny GPT-2 (2 layers, width 64) and its tokenizer to `out`; returns `out`."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; choose one of {', '.join(VARIANTS)}")
    tokenizer = build_tokenizer()
    torch.manual_seed(seed)
    config = GPT2Config(
        vocab_size=len(tokenizer),
        n_positions=n_positions,
        n_embd=64,
        n_layer=2,
        n_head=2,
        bos_token_id=tokenizer.eos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        # Wide initial weights give peaked next-token distributions, so greedy choices are
        # far from ties and exact-equality tests are meaningful.
        initializer_range=0.2,
        tie_word_embeddings=True,
    )
    model = GPT2LMHeadModel(config).eval()  # type: ignore[no-untyped-call]
    # Make the end-of-text token rare so generations run to max_tokens unless a test wants otherwise.
    with torch.no_grad():
        model.transformer.wte.weight[tokenizer.eos_token_id].mul_(0.0)
        if variant == "permuted-positions":
            generator = torch.Generator().manual_seed(seed + 1)
            order = torch.randperm(n_positions, generator=generator)
            model.transformer.wpe.weight.copy_(model.transformer.wpe.weight[order])
        elif variant == "permuted-far-positions":
            generator = torch.Generator().manual_seed(seed + 1)
            far = FAR_POSITION + torch.randperm(n_positions - FAR_POSITION, generator=generator)
            order = torch.cat([torch.arange(FAR_POSITION), far])
            model.transformer.wpe.weight.copy_(model.transformer.wpe.weight[order])
        elif variant == "shuffled-vocabulary":
            generator = torch.Generator().manual_seed(seed + 2)
            order = torch.randperm(config.vocab_size, generator=generator)
            model.transformer.wte.weight.copy_(model.transformer.wte.weight[order])
    if variant == "swapped-tokenizer":
        tokenizer = swapped_tokenizer(tokenizer, seed + 3)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Write the tiny test GPT-2 to a folder.")
    parser.add_argument("out", type=Path)
    parser.add_argument("--variant", default="none", choices=VARIANTS)
    parser.add_argument("--seed", type=int, default=1234)
    args = parser.parse_args(argv)
    build(args.out, seed=args.seed, variant=args.variant)
    print(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
