"""Run the runtime as its own process (`python -m model_runtime serve`) and talk to it over loopback.

Its output goes to a temporary file, not a pipe: the runtime logs every request, and a pipe nobody reads
fills after a few hundred of them and then blocks the server's event loop on a log write."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import IO, Any

HOST = "127.0.0.1"
_OUTPUTS: dict[int, IO[bytes]] = {}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return int(probe.getsockname()[1])


def call(url: str, body: dict[str, Any] | None = None, timeout: float = 30) -> tuple[int, dict[str, Any]]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def start(model: Path, port: int, *extra: str) -> subprocess.Popen[bytes]:
    log = tempfile.TemporaryFile()  # noqa: SIM115 (lives as long as the process; read by output())
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "model_runtime",
            "serve",
            "--model-path",
            str(model),
            "--host",
            HOST,
            "--port",
            str(port),
            *extra,
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONPATH": "."},
    )
    _OUTPUTS[process.pid] = log
    return process


def output(process: subprocess.Popen[bytes]) -> str:
    """Everything the process has printed so far."""
    log = _OUTPUTS[process.pid]
    log.seek(0)
    return log.read().decode(errors="replace")


def wait_ready(base: str, process: subprocess.Popen[bytes], timeout: float = 120) -> list[int]:
    """Poll readiness; returns the codes seen (to show it was not ready before the model loaded)."""
    seen = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, output(process)
        try:
            code, _ = call(f"{base}/health/ready", timeout=2)
            seen.append(code)
            if code == 200:
                return seen
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            seen.append(0)
        time.sleep(0.05)
    raise AssertionError(f"not ready within {timeout}s; codes {seen[-5:]}")
