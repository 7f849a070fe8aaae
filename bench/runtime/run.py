"""Runtime throughput and latency: ModelShip's server against the naive baseline, on the same machine,
model and prompts, one server at a time, at concurrency 1, 8 and 32.

    python -m bench.runtime.run                 # SmolLM2-135M-Instruct and the tiny test model
    python -m bench.runtime.run --models tiny   # quick

It prints a table per model with req/s, output tokens/s, P50, P99 and the ModelShip/baseline ratios.
Traffic goes only to 127.0.0.1; every loop is bounded by a request count.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import aiohttp

REPO = Path(__file__).resolve().parents[2]
PROMPTS = [
    "The capital of France is",
    "Write a haiku about the sea.",
    "Explain what a canary release is in one line.",
    "List three prime numbers:",
    "Translate 'good morning' to Spanish:",
    "Kubernetes is",
    "Once upon a time, in a small village by the mountains, there lived an old clockmaker who",
    "def fibonacci(n):",
    "The three primary colours are",
    "A short story about a robot learning to paint:",
    "Q: What is 12 times 12? A:",
    "The best way to learn a new language is",
    "Summarise: Prometheus is an open-source monitoring system with a dimensional data model.",
    "Recipe for pancakes: 1.",
    "Why is the sky blue?",
    "In machine learning, overfitting means",
]


@dataclass
class Level:
    concurrency: int
    requests: int


@dataclass
class Figures:
    concurrency: int
    requests: int
    seconds: float
    tokens: int
    p50: float
    p99: float

    @property
    def rps(self) -> float:
        return self.requests / self.seconds

    @property
    def tps(self) -> float:
        return self.tokens / self.seconds


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


async def drive(url: str, level: Level, max_tokens: int, model: str) -> Figures:
    latencies: list[float] = []
    tokens = 0
    queue: asyncio.Queue[str] = asyncio.Queue()
    for index in range(level.requests):
        queue.put_nowait(PROMPTS[index % len(PROMPTS)])
    timeout = aiohttp.ClientTimeout(total=1800)

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal tokens
        while True:
            try:
                prompt = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            began = time.perf_counter()
            async with session.post(
                url, json={"model": model, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0}
            ) as response:
                body = await response.json()
                if response.status != 200:
                    raise RuntimeError(f"{response.status}: {body}")
            latencies.append(time.perf_counter() - began)
            tokens += int(body["usage"]["completion_tokens"])

    started = time.perf_counter()
    async with aiohttp.ClientSession(timeout=timeout) as session:
        await asyncio.gather(*(worker(session) for _ in range(level.concurrency)))
    elapsed = time.perf_counter() - started
    return Figures(
        level.concurrency, level.requests, elapsed, tokens, statistics.median(latencies), percentile(latencies, 0.99)
    )


def serve(kind: str, model_path: Path, port: int, max_batch: int) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    if kind == "baseline":
        command = [sys.executable, "-m", "bench.runtime.baseline", "--model-path", str(model_path), "--port", str(port)]
    else:
        command = [
            sys.executable,
            "-m",
            "model_runtime",
            "serve",
            "--model-path",
            str(model_path),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--max-batch-size",
            str(max_batch),
            "--max-batch-wait-ms",
            "5",
            "--max-concurrent-requests",
            "256",
            "--request-timeout-seconds",
            "1800",
            "--model-name",
            "bench",
        ]
    return subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


async def wait_ready(port: int, process: subprocess.Popen[bytes], limit: float = 600) -> None:
    deadline = time.monotonic() + limit
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"server exited with {process.returncode}")
            try:
                async with session.get(f"http://127.0.0.1:{port}/health/ready") as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.2)
    raise TimeoutError("server not ready")


async def measure(kind: str, model_path: Path, levels: list[Level], max_tokens: int) -> list[Figures]:
    port = free_port()
    process = serve(kind, model_path, port, max_batch=max(level.concurrency for level in levels))
    try:
        await wait_ready(port, process)
        url = f"http://127.0.0.1:{port}/v1/completions"
        await drive(url, Level(2, 4), max_tokens, "bench")  # warm both servers the same way
        return [await drive(url, level, max_tokens, "bench") for level in levels]
    finally:
        process.terminate()
        process.wait(timeout=60)


def model_dirs(names: list[str], scratch: Path) -> dict[str, Path]:
    from model_runtime.convert import convert
    from model_runtime.packaged import smollm2_gguf
    from model_runtime.tinymodel import build

    cache = Path(os.environ.get("MODELSHIP_CACHE_DIR", Path.home() / ".cache" / "modelship")) / "models"
    found = {}
    for name in names:
        if name == "smollm2":
            found[name] = convert(smollm2_gguf(), cache / "smollm2-135m-instruct")
        else:
            found[name] = build(scratch / "tiny-gpt2")
    return found


PLANS = {
    # (levels, max_tokens): counts keep the slow baseline's run bounded (about 4 minutes for SmolLM2).
    "smollm2": ([Level(1, 8), Level(8, 32), Level(32, 64)], 16),
    "tiny": ([Level(1, 32), Level(8, 128), Level(32, 256)], 32),
}


def report(name: str, baseline: list[Figures], ours: list[Figures]) -> str:
    rows = [
        f"### {name}",
        "",
        "| concurrency | requests | baseline req/s | ModelShip req/s | throughput x | baseline tok/s | "
        "ModelShip tok/s | baseline P50 | ModelShip P50 | baseline P99 | ModelShip P99 |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for b, m in zip(baseline, ours, strict=True):
        rows.append(
            f"| {b.concurrency} | {b.requests} | {b.rps:.2f} | {m.rps:.2f} | {m.rps / b.rps:.1f}x | "
            f"{b.tps:.1f} | {m.tps:.1f} | {b.p50 * 1000:.0f} ms | {m.p50 * 1000:.0f} ms | "
            f"{b.p99 * 1000:.0f} ms | {m.p99 * 1000:.0f} ms |"
        )
    return "\n".join(rows)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--models", nargs="+", default=["smollm2", "tiny"], choices=sorted(PLANS))
    parser.add_argument("--json", type=Path, help="also write the figures as JSON")
    args = parser.parse_args()
    results: dict[str, dict[str, list[dict[str, float]]]] = {}
    print(f"# runtime benchmark: {platform.machine()}, {os.cpu_count()} CPUs, python {platform.python_version()}")
    with tempfile.TemporaryDirectory() as scratch:
        for name, path in model_dirs(args.models, Path(scratch)).items():
            levels, max_tokens = PLANS[name]
            baseline = asyncio.run(measure("baseline", path, levels, max_tokens))
            ours = asyncio.run(measure("modelship", path, levels, max_tokens))
            print(report(f"{name} (max_tokens {max_tokens}, greedy)", baseline, ours), flush=True)
            results[name] = {"baseline": [vars(f) for f in baseline], "modelship": [vars(f) for f in ours]}
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
