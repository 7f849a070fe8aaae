"""Where a decode step of ModelShip's engine spends its time: 32 sequences of SmolLM2-135M-Instruct with
prompts of the benchmark's lengths, one step profiled with torch.profiler, operators by self CPU time.

    python -m bench.runtime.profile_step [--rows 32] [--dtype float32] [--padded-attention]

`--padded-attention` measures the attention the engine used before row-by-row decode attention (attention.py):
one SDPA call over the batch's padded width with a padding mask.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

from bench.runtime.peers_run import PROMPT_TOKENS, prompts
from bench.runtime.run import model_dirs
from model_runtime.engine import GenerationEngine, GenerationWork
from model_runtime.model import Placement, load
from model_runtime.sampling import SamplingParams


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rows", type=int, default=32)
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    parser.add_argument("--padded-attention", action="store_true", help="one masked SDPA call over the padded batch")
    args = parser.parse_args(argv)
    folder = model_dirs(["smollm2"], Path("/tmp"))["smollm2"]
    loaded = load(str(folder), "text-generation", Placement("cpu", getattr(torch, args.dtype)))
    loaded.rows_attention = loaded.rows_attention and not args.padded_attention
    engine = GenerationEngine(loaded, args.rows, 5, prefill_tokens=1 << 20)
    texts = prompts(folder, args.rows)
    params = SamplingParams(max_new_tokens=64, temperature=0.0, ignore_eos=True)
    for text in texts:
        ids = list(loaded.tokenizer.encode(text))
        work = GenerationWork(sink=lambda event: None, deadline=time.monotonic() + 600, prompt_ids=ids, params=params)
        engine.submit(work)
    torch.set_grad_enabled(False)
    engine._cycle()  # the engine's own loop, driven by hand: prefill every row, one step
    for _ in range(3):
        engine._decode_step()  # warm-up
    steps = 5
    began = time.perf_counter()
    for _ in range(steps):
        engine._decode_step()
    elapsed = (time.perf_counter() - began) / steps  # unprofiled: the profiler's own cost grows with the calls
    with profile(activities=[ProfilerActivity.CPU]) as profiler:
        for _ in range(steps):
            engine._decode_step()
    width = engine.mask.shape[1] if engine.mask is not None else 0
    print(
        f"{args.rows} rows, prompts {PROMPT_TOKENS[0]}-{PROMPT_TOKENS[-1]} tokens, cache width {width}, "
        f"{args.dtype}, {'padded' if not loaded.rows_attention else 'row-by-row'} attention: {elapsed * 1000:.0f} ms"
        f" per step, {args.rows / elapsed:.0f} tokens/s"
    )
    print(profiler.key_averages().table(sort_by="self_cpu_time_total", row_limit=15))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
