"""Build llama.cpp's own OpenAI server, `llama-server`, from the sources vendored in the pinned
llama-cpp-python sdist on PyPI, and cache it per version.

Why not the llama-cpp-python wheel's server: on a CPU with AVX-512 and AMX the wheel dies with `Illegal
instruction` in llama.cpp's AMX matmul, and its Python server runs one request at a time. The peer a user
would run is `llama-server` with `--parallel N --cont-batching`, built for the instruction sets this
machine's CPU has (machines of this kind differ: some have AVX-512 and AMX, some only AVX2), AMX always
off, and cached per version and instruction sets. The binary links libstdc++ and libgcc statically so it
runs in the image's bare Debian base.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

from e2e.cluster.tools import ToolError, cache_root, require_debian_packages

LLAMA_CPP_PYTHON_VERSION = "0.3.36"

# Each of llama.cpp's instruction-set options, on when the CPU has every /proc/cpuinfo flag it needs
# (GGML_AVX512 compiles with -mavx512f, cd, vl, dq and bw). A binary with an instruction the CPU lacks dies
# with SIGILL at its first matmul, so an option is never on by default.
INSTRUCTION_SETS = (
    ("GGML_AVX", ("avx",)),
    ("GGML_AVX2", ("avx2",)),
    ("GGML_FMA", ("fma",)),
    ("GGML_F16C", ("f16c",)),
    ("GGML_AVX512", ("avx512f", "avx512cd", "avx512vl", "avx512dq", "avx512bw")),
    ("GGML_AVX512_VNNI", ("avx512_vnni",)),
    ("GGML_AVX512_BF16", ("avx512_bf16",)),
)
CMAKE_FLAGS = (
    "-DCMAKE_BUILD_TYPE=Release",
    "-DBUILD_SHARED_LIBS=OFF",
    "-DGGML_NATIVE=OFF",  # exactly the instruction sets below, named in the cache key
    "-DGGML_AMX_TILE=OFF",  # the AMX matmul is what crashes on the CPUs that have AMX
    "-DGGML_AMX_INT8=OFF",
    "-DGGML_AMX_BF16=OFF",
    "-DGGML_OPENMP=OFF",  # llama.cpp's own thread pool; no libgomp to carry into the image
    "-DLLAMA_BUILD_SERVER=ON",
    "-DLLAMA_BUILD_TESTS=OFF",
    "-DLLAMA_BUILD_EXAMPLES=OFF",
    "-DLLAMA_CURL=OFF",
    "-DLLAMA_OPENSSL=OFF",
    "-DCMAKE_EXE_LINKER_FLAGS=-static-libstdc++ -static-libgcc",
)


def cpu_flags(cpuinfo: str | None = None) -> frozenset[str]:
    """The instruction-set flags of the first CPU in /proc/cpuinfo."""
    text = Path("/proc/cpuinfo").read_text() if cpuinfo is None else cpuinfo
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags":
            return frozenset(value.split())
    return frozenset()


def instruction_sets(flags: frozenset[str]) -> tuple[str, ...]:
    """The GGML options this CPU can run, in INSTRUCTION_SETS' order."""
    return tuple(option for option, needs in INSTRUCTION_SETS if all(flag in flags for flag in needs))


def cmake_flags(flags: frozenset[str]) -> tuple[str, ...]:
    chosen = instruction_sets(flags)
    return (*CMAKE_FLAGS, *(f"-D{option}={'ON' if option in chosen else 'OFF'}" for option, _ in INSTRUCTION_SETS))


def directory(flags: frozenset[str] | None = None) -> Path:
    chosen = instruction_sets(cpu_flags() if flags is None else flags)
    tag = "-".join(option.removeprefix("GGML_").lower() for option in chosen) or "generic"
    return cache_root() / f"llamacpp-{LLAMA_CPP_PYTHON_VERSION}-{tag}"


def server_binary() -> Path:
    return directory() / "bin" / "llama-server"


def is_built() -> bool:
    return server_binary().is_file()


def _run(command: list[str], cwd: Path, log: Path) -> None:
    with log.open("a") as sink:
        sink.write(f"\n$ {' '.join(command)}\n")
        sink.flush()
        result = subprocess.run(command, cwd=cwd, stdout=sink, stderr=subprocess.STDOUT, check=False)
    if result.returncode != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-25:])
        raise ToolError(
            f"`{' '.join(command)}` failed (exit {result.returncode}) in {cwd}.\n{tail}\n"
            f"Full log: {log}. Delete {directory()} to start the build over."
        )


def _sources(work: Path, log: Path) -> Path:
    """The llama.cpp tree vendored in the sdist (downloaded from PyPI once)."""
    unpacked = work / f"llama_cpp_python-{LLAMA_CPP_PYTHON_VERSION}"
    if (unpacked / "vendor" / "llama.cpp" / "CMakeLists.txt").is_file():
        return unpacked / "vendor" / "llama.cpp"
    download = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--no-binary",
        ":all:",
        "--dest",
        str(work),
        f"llama-cpp-python=={LLAMA_CPP_PYTHON_VERSION}",
    ]
    _run(download, work, log)
    archive = work / f"llama_cpp_python-{LLAMA_CPP_PYTHON_VERSION}.tar.gz"
    with tarfile.open(archive) as sdist:
        sdist.extractall(work, filter="data")
    return unpacked / "vendor" / "llama.cpp"


def build(*, force: bool = False) -> Path:
    """The cached `llama-server`, built on first use (about 5 minutes on 2 idle cores)."""
    if is_built() and not force:
        return server_binary()
    require_debian_packages("cmake", "g++")
    work = directory() / "src"
    work.mkdir(parents=True, exist_ok=True)
    log = directory() / "build.log"
    started = time.monotonic()
    print(f"[llamacpp] building llama-server {LLAMA_CPP_PYTHON_VERSION} (first run only; log: {log})", flush=True)
    source = _sources(work, log)
    build_dir = work / "build"
    generator = "Ninja" if shutil.which("ninja") else "Unix Makefiles"
    _run(["cmake", "-S", str(source), "-B", str(build_dir), "-G", generator, *cmake_flags(cpu_flags())], work, log)
    jobs = str(os.cpu_count() or 2)
    _run(["cmake", "--build", str(build_dir), "--target", "llama-server", "--parallel", jobs], work, log)
    built = build_dir / "bin" / "llama-server"
    if not built.is_file():
        raise ToolError(f"the build finished but {built} is missing; see {log}")
    server_binary().parent.mkdir(parents=True, exist_ok=True)
    tmp = server_binary().with_suffix(".tmp")
    shutil.copy2(built, tmp)
    tmp.replace(server_binary())  # the cache holds a binary only once it is whole
    print(f"[llamacpp] built llama-server in {time.monotonic() - started:.0f}s", flush=True)
    return server_binary()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Build (or locate) llama.cpp's llama-server.")
    parser.add_argument("--force", action="store_true")
    args = parser.parse_args(argv)
    try:
        print(build(force=args.force))
    except ToolError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
