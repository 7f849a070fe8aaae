"""The images in `docker/`, built as a user would build them (on a Debian base made with debootstrap), run
as their own non-root user: the runtime image serves a real model, the operator image starts."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from e2e.cluster import images
from e2e.cluster.processes import free_port
from e2e.kube import wait_until


@pytest.fixture(scope="session")
def built() -> images.Images:
    return images.build()


@contextmanager
def container(image: str) -> Iterator[str]:
    name = subprocess.run(["buildah", "from", image], capture_output=True, text=True, check=True).stdout.strip()
    try:
        yield name
    finally:
        subprocess.run(["buildah", "rm", name], capture_output=True, check=False)


def config(image: str) -> dict[str, object]:
    inspected = subprocess.run(["buildah", "inspect", "--type", "image", image], capture_output=True, check=True)
    oci: dict[str, object] = json.loads(inspected.stdout)["OCIv1"]["config"]
    return oci


def run_as_image_user(name: str, image: str, *argv: str, volume: str | None = None) -> list[str]:
    """`buildah run` with the image's own user (the Dockerfile's USER), as a container runtime would."""
    user = str(config(image)["User"])
    mounts = ["--volume", volume] if volume else []
    return ["buildah", "run", "--isolation", "chroot", "--network", "host", "--user", user, *mounts, name, "--", *argv]


def test_images_declare_a_non_root_user_and_their_entrypoints(built: images.Images) -> None:
    runtime, operator = config(built.runtime), config(built.operator)
    assert runtime["User"] == operator["User"] == "1000:1000"
    assert runtime["Entrypoint"] == ["python", "-m", "model_runtime"]
    assert runtime["Cmd"] == ["serve"]
    assert operator["Entrypoint"] == ["python", "-m", "model_operator"]


def test_operator_image_starts_as_uid_1000(built: images.Images) -> None:
    probe = "import os, model_operator.handlers; print(os.getuid(), os.getgid())"
    with container(built.operator) as name:
        argv = run_as_image_user(name, built.operator, "python", "-c", probe)
        done = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["1000", "1000"]


def test_runtime_image_serves_a_real_model_as_uid_1000(built: images.Images, models_dir: Path) -> None:
    port = free_port()
    serve = [
        "python",
        "-m",
        "model_runtime",
        "serve",
        "--model-path=/models/tiny",
        "--model-name=tiny",
        "--host=127.0.0.1",
        f"--port={port}",
    ]
    with container(built.runtime) as name:
        argv = run_as_image_user(name, built.runtime, *serve, volume=f"{models_dir}:/models:ro")
        server = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            wait_until(lambda: _ready(port, server), f"the runtime image serving on 127.0.0.1:{port}", 180)
            body = json.dumps({"model": "tiny", "prompt": "Hello", "max_tokens": 4, "temperature": 0}).encode()
            request = urllib.request.Request(
                f"http://127.0.0.1:{port}/v1/completions", body, {"Content-Type": "application/json"}
            )
            with urllib.request.urlopen(request, timeout=60) as response:
                answer = json.loads(response.read())
            assert answer["choices"][0]["finish_reason"] in ("length", "stop")
            assert answer["usage"]["completion_tokens"] >= 1
            served_by = _listener_uid(port)
            assert served_by == 1000, f"the server's process runs as uid {served_by}"
        finally:
            os.killpg(server.pid, signal.SIGTERM)
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(server.pid, signal.SIGKILL)
                server.wait(timeout=10)


def _ready(port: int, server: subprocess.Popen[bytes]) -> bool:
    if server.poll() is not None:
        output = server.stdout.read().decode(errors="replace") if server.stdout else ""
        raise AssertionError(f"the runtime image exited with {server.returncode}:\n{output[-3000:]}")
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health/ready", timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def _listener_uid(port: int) -> int:
    """The uid owning the TCP socket listening on 127.0.0.1:port, from /proc/net/tcp."""
    wanted = f"0100007F:{port:04X}"
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[1] == wanted and fields[3] == "0A":  # 0A: LISTEN
            return int(fields[7])
    raise AssertionError(f"nothing listens on 127.0.0.1:{port}")


def test_unchanged_inputs_are_not_rebuilt(built: images.Images) -> None:
    ids = {tag: config_id(tag) for tag in (built.base, built.runtime, built.operator)}
    log = images.build_log()
    before = log.stat().st_mtime_ns if log.exists() else None
    assert images.build() == built
    assert {tag: config_id(tag) for tag in ids} == ids, "an unchanged input was rebuilt"
    assert (log.stat().st_mtime_ns if log.exists() else None) == before, f"a build step ran: {log}"


def config_id(image: str) -> str:
    inspected = subprocess.run(["buildah", "inspect", "--type", "image", image], capture_output=True, check=True)
    return str(json.loads(inspected.stdout)["FromImageID"])
