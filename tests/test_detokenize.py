"""Incremental detokenization: the same text as decoding everything, without decoding everything per token."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest
from transformers import AutoTokenizer

from model_runtime.detokenize import Detokenizer


class CountingTokenizer:
    """A tokenizer that counts how many tokens its whole-text `decode` was given."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.backend_tokenizer = inner.backend_tokenizer
        self.decoded_tokens = 0

    def decode(self, ids: list[int], **kwargs: Any) -> str:
        self.decoded_tokens += len(ids)
        return str(self.inner.decode(ids, **kwargs))


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir: Path) -> Any:
    return AutoTokenizer.from_pretrained(str(tiny_model_dir))


SENTENCES = ["Hello, wörld! 日本語のテキスト 🎉 done.", "plain ascii words and  double  spaces", "naïve café 🙂🙃"]


@pytest.mark.parametrize("sentence", SENTENCES)
def test_streamed_text_is_the_decoded_text_of_real_sentences(tokenizer: Any, sentence: str) -> None:
    ids = tokenizer(sentence).input_ids
    detokenizer = Detokenizer(tokenizer)
    for end in range(1, len(ids)):
        assert tokenizer.decode(ids[:end], skip_special_tokens=True).startswith(detokenizer.add(ids[:end]))
    assert detokenizer.whole(ids) == tokenizer.decode(ids, skip_special_tokens=True) == sentence


@pytest.mark.parametrize("seed", range(20))
def test_every_prefix_of_random_tokens_is_a_prefix_of_the_full_decode(tokenizer: Any, seed: int) -> None:
    """Byte tokens that split characters included: what is shown is never text the full decode lacks."""
    chooser = random.Random(seed)
    ids = [chooser.randrange(len(tokenizer)) for _ in range(64)]
    detokenizer = Detokenizer(tokenizer)
    for end in range(1, len(ids)):
        shown = detokenizer.add(ids[:end])
        assert tokenizer.decode(ids[:end], skip_special_tokens=True).startswith(shown), (seed, end)
    assert detokenizer.whole(ids) == tokenizer.decode(ids, skip_special_tokens=True)


def test_a_long_answer_decodes_each_token_once_then_the_whole_once(tokenizer: Any) -> None:
    counting = CountingTokenizer(tokenizer)
    ids = tokenizer("the quick brown fox jumps over the lazy dog " * 40).input_ids
    detokenizer = Detokenizer(counting)
    for end in range(1, len(ids)):
        detokenizer.add(ids[:end])
    detokenizer.whole(ids)
    assert counting.decoded_tokens == len(ids)  # decoding all of it every time would be len^2 / 2


def test_a_slow_tokenizer_without_a_backend_decodes_the_whole_text(tokenizer: Any) -> None:
    class Slow:
        def decode(self, ids: list[int], **kwargs: Any) -> str:
            return str(tokenizer.decode(ids, **kwargs))

    ids = tokenizer("hello world").input_ids
    assert Detokenizer(Slow()).add(ids) == tokenizer.decode(ids)
