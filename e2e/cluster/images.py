"""Build ModelShip's images from `docker/` with buildah, on a base image made from Debian packages.

No container registry is reachable, so the base (Debian bookworm with python3 and python3-venv) is made
with debootstrap and committed as a local image; the Dockerfiles take it as their `BASE` build argument.
Every image is tagged by a hash of its inputs (the base's package list; a Dockerfile, the files it copies
and the base's tag), so an unchanged input is never built twice. buildah keeps the layers and a pip
download cache, so a change to ModelShip's code rebuilds only the last layer of the runtime image.

    python -m e2e.cluster.images        # build what is missing and print the tags
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from . import llamacpp, tools

REPO_ROOT = Path(__file__).resolve().parents[2]
DEBIAN_SUITE = "bookworm"
DEBIAN_MIRROR = "http://deb.debian.org/debian"
BASE_PACKAGES = ("python3", "python3-venv", "ca-certificates")
# The Dockerfiles' build context: what their COPY lines take from the repository root.
CONTEXT = ("requirements.lock", "pyproject.toml", "README.md", "model_runtime", "model_operator")
# The machine's trust store, which includes any TLS-inspecting proxy between this machine and PyPI; it is
# mounted into build steps only, never committed into an image.
BASE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
PAUSE_ENTRYPOINT = '["sleep", "infinity"]'
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")


class ImageError(RuntimeError):
    """An image could not be built; the message names the step and its log."""


@dataclass(frozen=True)
class Images:
    base: str
    runtime: str
    operator: str
    pause: str  # the pod sandbox's image: the base, sleeping (no registry serves registry.k8s.io/pause)


def _digest(parts: list[bytes]) -> str:
    hasher = hashlib.sha256()
    for part in parts:
        hasher.update(len(part).to_bytes(8, "big"))
        hasher.update(part)
    return hasher.hexdigest()[:12]


def _context_files(root: Path) -> Iterator[Path]:
    for name in CONTEXT:
        path = root / name
        if path.is_file():
            yield path
        else:
            yield from sorted(p for p in path.rglob("*") if p.is_file() and "__pycache__" not in p.parts)


def base_tag() -> str:
    key = _digest([DEBIAN_SUITE.encode(), DEBIAN_MIRROR.encode(), *(p.encode() for p in BASE_PACKAGES)])
    return f"localhost/modelship/base:{DEBIAN_SUITE}-{key}"


def image_tag(name: str, base: str, root: Path = REPO_ROOT) -> str:
    """`localhost/modelship/<name>:<hash>`, the hash over the Dockerfile, its context and the base."""
    dockerfile = root / "docker" / f"{name}.Dockerfile"
    parts = [base.encode(), dockerfile.read_bytes()]
    for path in _context_files(root):
        parts += [str(path.relative_to(root)).encode(), path.read_bytes()]
    return f"localhost/modelship/{name}:{_digest(parts)}"


def _exists(tag: str) -> bool:
    found = subprocess.run(["buildah", "inspect", "--type", "image", tag], capture_output=True, check=False)
    return found.returncode == 0


def _run(step: str, argv: list[str], log: Path) -> str:
    """Run one build step with its output appended to `log`; return its standard output."""
    with log.open("ab") as sink:
        sink.write(f"\n$ {' '.join(argv)}\n".encode())
        sink.flush()
        done = subprocess.run(argv, stdout=subprocess.PIPE, stderr=sink, check=False)
        sink.write(done.stdout)
    if done.returncode != 0:
        tail = log.read_text(errors="replace").splitlines()[-15:]
        raise ImageError(f"{step} failed (exit {done.returncode}); last lines of {log}:\n" + "\n".join(tail))
    return done.stdout.decode(errors="replace").strip()


def _build_base(tag: str, log: Path) -> None:
    with tempfile.TemporaryDirectory(prefix="modelship-rootfs-") as scratch:
        rootfs = Path(scratch) / "rootfs"
        _run(
            "debootstrap",
            [
                "debootstrap",
                "--variant=minbase",
                f"--include={','.join(BASE_PACKAGES)}",
                DEBIAN_SUITE,
                str(rootfs),
                DEBIAN_MIRROR,
            ],
            log,
        )
        for cache in ("var/lib/apt/lists", "var/cache/apt"):
            shutil.rmtree(rootfs / cache, ignore_errors=True)
        container = _run("creating the base container", ["buildah", "from", "scratch"], log)
        try:
            mount = _run("mounting the base container", ["buildah", "mount", container], log)
            _run("copying the root filesystem", ["cp", "-a", f"{rootfs}/.", mount], log)
            _run("unmounting the base", ["buildah", "umount", container], log)
            _run(
                "configuring the base",
                ["buildah", "config", "--env", f"PATH={BASE_PATH}", "--cmd", "/bin/bash", container],
                log,
            )
            _run("committing the base", ["buildah", "commit", "--rm", container, tag], log)
        except BaseException:
            subprocess.run(["buildah", "rm", container], capture_output=True, check=False)
            raise


def pause_tag(base: str) -> str:
    return f"localhost/modelship/pause:{_digest([base.encode(), PAUSE_ENTRYPOINT.encode()])}"


def _build_pause(base: str, tag: str, log: Path) -> None:
    container = _run("creating the pause container", ["buildah", "from", "--pull-never", base], log)
    try:
        _run(
            "configuring the pause image",
            ["buildah", "config", "--entrypoint", PAUSE_ENTRYPOINT, "--cmd", "", "--user", "65535:65535", container],
            log,
        )
        _run("committing the pause image", ["buildah", "commit", "--rm", container, tag], log)
    except BaseException:
        subprocess.run(["buildah", "rm", container], capture_output=True, check=False)
        raise


def _build_image(name: str, base: str, tag: str, log: Path) -> None:
    argv = ["buildah", "bud", "--isolation", "chroot", "--layers", "--build-arg", f"BASE={base}"]
    if HOST_CA_BUNDLE.is_file():
        argv += ["--volume", f"{HOST_CA_BUNDLE}:/etc/ssl/certs/ca-certificates.crt:ro"]
    argv += ["-f", str(REPO_ROOT / "docker" / f"{name}.Dockerfile"), "-t", tag, str(REPO_ROOT)]
    _run(f"building {tag}", argv, log)


def _remove_stale(tag: str) -> None:
    """Untag older builds of the same image, so disk use does not grow with every change of the code."""
    repository = tag.rsplit(":", 1)[0]
    listed = subprocess.run(
        ["buildah", "images", "--format", "{{.Name}}:{{.Tag}}"], capture_output=True, text=True, check=False
    )
    stale = [name for name in listed.stdout.split() if name.rsplit(":", 1)[0] == repository and name != tag]
    if stale:
        subprocess.run(["buildah", "rmi", *stale], capture_output=True, check=False)


@contextmanager
def _build_lock() -> Iterator[None]:
    lock_path = tools.cache_root().parent / "images.lock"
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with lock_path.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def build_log() -> Path:
    """The output of the latest build that had something to build."""
    return tools.cache_root().parent / "images.log"


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def build() -> Images:
    """Build the base and both images unless an image with the same inputs exists; return their tags."""
    tools.require_debian_packages("buildah", "debootstrap")
    log = build_log()
    with _build_lock():
        base = base_tag()
        images = Images(
            base,
            runtime=image_tag("runtime", base),
            operator=image_tag("operator", base),
            pause=pause_tag(base),
        )
        building = False
        for name in ("base", "pause", "runtime", "operator"):
            tag = getattr(images, name)
            if _exists(tag):
                continue
            if not building:
                log.write_bytes(b"")  # the log holds the latest build only
                building = True
            started = time.monotonic()
            _say(f"[images] building {tag} (log: {log})")
            if name == "base":
                _build_base(tag, log)
            elif name == "pause":
                _build_pause(images.base, tag, log)
            else:
                _build_image(name, images.base, tag, log)
            _say(f"[images] {tag} built in {time.monotonic() - started:.0f}s")
            _remove_stale(tag)
        return images


LLAMACPP_BINARY = "/usr/local/bin/llama-server"


def _build_binary_image(name: str, base: str, binary: Path, path: str, tag: str, log: Path) -> None:
    """One binary on the bare base as its entrypoint, as uid 1000 (it needs glibc at most)."""
    container = _run(f"creating the {name} container", ["buildah", "from", "--pull-never", base], log)
    try:
        copy = ["buildah", "copy", "--chmod", "0755", container, str(binary), path]
        _run(f"copying {binary.name}", copy, log)
        _run(
            f"configuring the {name} image",
            [
                "buildah",
                "config",
                "--entrypoint",
                f'["{path}"]',
                "--cmd",
                "",
                "--user",
                "1000:1000",
                "--label",
                f"modelship.image=modelship/{name}",
                container,
            ],
            log,
        )
        _run(f"committing the {name} image", ["buildah", "commit", "--rm", container, tag], log)
    except BaseException:
        subprocess.run(["buildah", "rm", container], capture_output=True, check=False)
        raise


def binary_image_tag(name: str, base: str, binary: Path) -> str:
    """`localhost/modelship/NAME:<hash>`, the hash over the base and the binary."""
    return f"localhost/modelship/{name}:{_digest([base.encode(), binary.read_bytes()])}"


def _binary_image(name: str, binary: Path, path: str) -> str:
    with _build_lock():
        tag = binary_image_tag(name, base_tag(), binary)
        if not _exists(tag):
            started = time.monotonic()
            _say(f"[images] building {tag} (log: {build_log()})")
            _build_binary_image(name, base_tag(), binary, path, tag, build_log())
            _say(f"[images] {tag} built in {time.monotonic() - started:.0f}s")
            _remove_stale(tag)
        return tag


def build_llamacpp() -> str:
    """The image of llama.cpp's own server (built from the pinned llama-cpp-python sdist on first use), for
    the scenarios where ModelShip rolls out a server that is not its own. Not part of `build()`: its first
    build takes about 20 minutes, and only those scenarios need it."""
    return _binary_image("llamacpp", llamacpp.build(), LLAMACPP_BINARY)


def build_endpoint_picker() -> str:
    """The image of the Gateway API Inference Extension's lightweight endpoint picker (built from the Go
    module proxy on first use), for the InferencePool scenario."""
    picker = tools.build(tools.ENDPOINT_PICKER)
    return _binary_image("lwepp", picker.binary("lwepp"), "/usr/local/bin/lwepp")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m e2e.cluster.images", description=__doc__)
    parser.parse_args(argv)
    try:
        images = build()
    except (ImageError, tools.ToolError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"base: {images.base}\npause: {images.pause}\nruntime: {images.runtime}\noperator: {images.operator}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
