"""How far bfloat16 moves the drift SLI between two revisions of the same model: the router's mirror probe
(greedy, 4 tokens, top-10 logprobs) answered by SmolLM2-135M-Instruct alone and inside a batch of 32, in
float32 and bfloat16, compared with the router's own divergence function.

    python -m bench.runtime.dtype_drift [--prompts 32] [--batch 32] [--tokens 4] [--save FILE]

`--tokens 32` asks for longer greedy answers, as golden prompts do: how often they stay exactly the same.
`--save FILE` writes each pair's per-answer divergences as JSON; bench/judgment/run.py draws the drift of
its bfloat16 canaries from the one committed as bench/judgment/bf16_divergences.json.

In float32 a batch is exact (divergence 0). In bfloat16 a matmul's rounding depends on its shape, so two
identical revisions answer a probe slightly differently when their batches differ; and a runtime upgrade
that turns `dtype: auto` from float32 into bfloat16 compares a float32 stable with a bfloat16 canary. Both
are set against the drift the judgment simulation (bench/judgment/run.py) gives every good canary, whose
false-rollback rate it measures, and against the default drift threshold.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import threading
import time
from pathlib import Path
from typing import Any

import torch

from bench.judgment.run import GOOD_DRIFT
from bench.runtime.peers_run import prompts
from bench.runtime.run import model_dirs
from model_operator.api.spec import Thresholds
from model_runtime.engine import Finished, GenerationEngine, GenerationWork, TokenEvent
from model_runtime.model import Placement, cpu_computes_bf16, load
from model_runtime.router.divergence import mean_divergence
from model_runtime.sampling import SamplingParams

PROBE_TOKENS, PROBE_TOP = 4, 10  # the router's mirror probe
Answer = list[dict[str, float]]  # per position: token -> logprob, as the router reads an answer


def answer(loaded: Any, prompt_ids: list[list[int]], batch: int, tokens: int) -> list[Answer]:
    """Each prompt's probe answer, `batch` of them decoding together."""
    engine = GenerationEngine(loaded, batch, 5)
    results: list[Answer] = [[] for _ in prompt_ids]
    done = [threading.Event() for _ in prompt_ids]

    def sink(index: int) -> Any:
        def receive(event: Any) -> None:
            if isinstance(event, TokenEvent) and event.logprobs is not None:
                results[index].append({str(token): logprob for token, logprob in event.logprobs.top})
            elif isinstance(event, Finished):
                done[index].set()

        return receive

    params = SamplingParams(max_new_tokens=tokens, temperature=0.0, top_logprobs=PROBE_TOP, ignore_eos=True)
    engine.start()
    try:
        for start in range(0, len(prompt_ids), batch):
            group = range(start, min(start + batch, len(prompt_ids)))
            for index in group:
                deadline = time.monotonic() + 600
                engine.submit(
                    GenerationWork(sink=sink(index), deadline=deadline, prompt_ids=prompt_ids[index], params=params)
                )
            if not all(done[index].wait(600) for index in group):
                raise RuntimeError("the engine did not answer within 10 minutes")
    finally:
        engine.stop()
    return results


def greedy(probe: Answer) -> list[str]:
    return [max(position, key=lambda token: position[token]) for position in probe]


def divergences(a: list[Answer], b: list[Answer]) -> list[float]:
    return [d for x, y in zip(a, b, strict=True) if (d := mean_divergence(x, y)) is not None]


def describe(name: str, a: list[Answer], b: list[Answer]) -> str:
    values = sorted(divergences(a, b))
    p99 = values[min(len(values) - 1, round(0.99 * (len(values) - 1)))]
    same = sum(greedy(x) == greedy(y) for x, y in zip(a, b, strict=True))
    mean = statistics.fmean(values)
    return f"| {name} | {len(values)} | {mean:.5f} | {p99:.5f} | {values[-1]:.5f} | {same} of {len(a)} |"


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--prompts", type=int, default=32)
    parser.add_argument("--tokens", type=int, default=PROBE_TOKENS)
    parser.add_argument("--batch", type=int, default=32, help="how many decode together (prompts in groups)")
    parser.add_argument("--save", type=Path, help="write each pair's per-answer divergences here (JSON)")
    args = parser.parse_args(argv)
    torch.set_grad_enabled(False)
    folder = model_dirs(["smollm2"], Path("/tmp"))["smollm2"]
    answers: dict[tuple[str, int], list[Answer]] = {}
    for dtype in (torch.float32, torch.bfloat16):
        loaded = load(str(folder), "text-generation", Placement("cpu", dtype))
        ids = [list(loaded.tokenizer.encode(text)) for text in prompts(folder, args.prompts)]
        for batch in (1, args.batch):
            began = time.perf_counter()
            answers[(str(dtype).removeprefix("torch."), batch)] = answer(loaded, ids, batch, args.tokens)
            print(f"[dtype_drift] {dtype} batch {batch}: {time.perf_counter() - began:.0f}s", flush=True)
    alone, batched = 1, args.batch
    pairs = [
        ("float32 alone", ("float32", alone), f"float32 in a batch of {batched}", ("float32", batched)),
        ("bfloat16 alone", ("bfloat16", alone), f"bfloat16 in a batch of {batched}", ("bfloat16", batched)),
        ("float32 alone", ("float32", alone), f"bfloat16 in a batch of {batched}", ("bfloat16", batched)),
    ]
    rows = [
        f"| compared ({args.tokens} greedy tokens, top-10) | answers | mean JS | P99 | max | same greedy tokens |",
        "|---|---|---|---|---|---|",
        *(describe(f"{left} vs {right}", answers[a], answers[b]) for left, a, right, b in pairs),
    ]
    print("\n".join(rows))
    if args.save is not None:
        measured = {
            "measured": time.strftime("%Y-%m-%d"),
            "command": f"python -m bench.runtime.dtype_drift --prompts {args.prompts} --batch {args.batch}"
            f" --tokens {args.tokens}",
            "cpu": cpu_name(),
            "bf16_native": cpu_computes_bf16(),
            "torch": torch.__version__,
            "pairs": {f"{left} vs {right}": divergences(answers[a], answers[b]) for left, a, right, b in pairs},
        }
        args.save.write_text(json.dumps(measured, indent=1) + "\n")
    print(
        f"\nFor scale: the judgment simulation's good canaries drift {GOOD_DRIFT} on average (their false-rollback"
        f" rate is its table's first rows); the default drift threshold is {Thresholds().drift}."
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
