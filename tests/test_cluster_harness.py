"""The local cluster's harness: the tool builder's failure paths and its background components."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from e2e.cluster import llamacpp, node, tools
from e2e.cluster.processes import Background, ComponentDied


def test_missing_go_says_how_to_fix(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(tools, "GO_FALLBACKS", ())
    with pytest.raises(tools.ToolError, match="install Go"):
        tools._go()


def test_failed_build_shows_the_log_and_what_to_do(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("MODELSHIP_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("GOPROXY", "off")  # nothing can be downloaded: the build must fail, clearly
    monkeypatch.setenv("GOFLAGS", "-mod=mod")
    monkeypatch.setenv("GOMODCACHE", str(tmp_path / "modcache"))
    broken = tools.GoTool(
        name="nonexistent",
        module="example.invalid/nothing",
        version="v0.0.1",
        packages={"nothing": "example.invalid/nothing/cmd"},
    )
    with pytest.raises(tools.ToolError) as failure:
        tools.build(broken)
    message = str(failure.value)
    assert "failed" in message
    assert "Full log:" in message
    assert "delete" in message


def test_dead_component_is_reported_with_its_log(tmp_path: Path) -> None:
    component = Background(
        "flaky",
        ["sh", "-c", "echo starting; echo 'fatal: port taken' >&2; exit 1"],
        tmp_path / "flaky.log",
        tmp_path / "flaky.pid",
    )
    component.start()
    component._process.wait(timeout=10)
    with pytest.raises(ComponentDied, match="flaky is not running") as died:
        component.check()
    assert "fatal: port taken" in str(died.value)


def test_stop_ends_the_whole_process_group(tmp_path: Path) -> None:
    component = Background(
        "parent", ["sh", "-c", "sleep 300 & sleep 300 & wait"], tmp_path / "p.log", tmp_path / "p.pid"
    )
    component.start()
    pid = component.pid
    assert pid is not None
    component.stop(grace=2)
    listing = subprocess.run(
        ["ps", "-o", "pid=,stat=", "-g", str(pid)], capture_output=True, text=True, check=False
    ).stdout
    # Killed children are zombies until PID 1 reaps them (here PID 1 is no init and reaps late): not alive.
    survivors = [line for line in listing.splitlines() if not line.split()[1].startswith("Z")]
    assert survivors == []


def test_a_cgroup_removed_mid_walk_is_skipped(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """kubelet removes a pod's cgroups while a bring-up sweeps a crashed cluster's: the sweep goes on."""
    top = tmp_path / "modelship-crashed"
    vanishing = top / "kubepods" / "pod-a" / "container"
    staying = top / "kubepods" / "pod-b"
    for directory, pid in ((top, 11), (vanishing.parent, 12), (vanishing, 13), (staying, 14)):
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "cgroup.procs").write_text(f"{pid}\n")
    monkeypatch.setattr(node, "cgroup_directories", lambda cluster: [top])
    scandir = os.scandir

    def kubelet_removes_it_first(path: Any) -> Any:
        if Path(path) == vanishing and vanishing.exists():
            (vanishing / "cgroup.procs").unlink()
            vanishing.rmdir()
        return scandir(path)

    monkeypatch.setattr(os, "scandir", kubelet_removes_it_first)
    assert node.cgroup_processes("crashed") == [11, 12, 14]


AMD_AVX2 = "processor\t: 0\nflags\t\t: fpu sse2 avx avx2 fma f16c bmi2\nprocessor\t: 1\nflags\t\t: fpu\n"
XEON_AMX = "flags\t\t: avx avx2 fma f16c avx512f avx512cd avx512vl avx512dq avx512bw avx512_vnni avx512_bf16 amx_tile"


@pytest.mark.parametrize(
    ("cpuinfo", "on", "tag"),
    [
        (AMD_AVX2, {"GGML_AVX", "GGML_AVX2", "GGML_FMA", "GGML_F16C"}, "avx-avx2-fma-f16c"),
        (
            XEON_AMX,
            {option for option, _ in llamacpp.INSTRUCTION_SETS},
            "avx-avx2-fma-f16c-avx512-avx512_vnni-avx512_bf16",
        ),
        ("flags\t: avx512f avx2\n", {"GGML_AVX2"}, "avx2"),  # AVX-512 needs all five of its subsets
        ("", set(), "generic"),
    ],
)
def test_llama_server_is_built_for_the_instruction_sets_the_cpu_has(cpuinfo: str, on: set[str], tag: str) -> None:
    """A binary with AVX-512 on dies with SIGILL on an AVX2-only CPU: each option follows the CPU's flags."""
    flags = llamacpp.cpu_flags(cpuinfo)
    options = dict(flag.removeprefix("-D").split("=", 1) for flag in llamacpp.cmake_flags(flags) if "GGML_" in flag)
    assert {option for option, value in options.items() if value == "ON"} == on
    assert options["GGML_AMX_TILE"] == "OFF"
    assert options["GGML_NATIVE"] == "OFF"
    assert llamacpp.directory(flags).name == f"llamacpp-{llamacpp.LLAMA_CPP_PYTHON_VERSION}-{tag}"
