"""A network and a mount namespace per local cluster, so its node, pods and Services exist only inside it.

Both namespaces are bound to files under /run/modelship/<cluster> and outlive every process in them, so a
cluster can be brought up by one command and used or taken down by another. Components start through
`nsenter` into both; a client process only needs the network namespace and enters it with `setns(2)`
(`enter_network`), which switches the calling thread and every thread or process it starts afterwards.

The mount namespace keeps containerd's and kubelet's mounts off the machine, and it is where the
machine-wide sysctls kubelet insists on rewriting are covered by plain files (`shield_sysctls`).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar, cast

T = TypeVar("T")

RUN_ROOT = Path("/run/modelship")
CLONE_NEWNET = 0x40000000
# What kubelet's container manager sets at start-up (setupKernelTunables), all of them machine-wide.
KUBELET_SYSCTLS = (
    "vm/overcommit_memory",
    "vm/panic_on_oom",
    "kernel/panic",
    "kernel/panic_on_oops",
    "kernel/keys/root_maxkeys",
    "kernel/keys/root_maxbytes",
)


class NamespaceError(RuntimeError):
    """A namespace could not be made, entered or removed; the message says which and why."""


def _run(argv: list[str], what: str) -> str:
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise NamespaceError(f"{what}: `{' '.join(argv)}` failed: {(done.stderr or done.stdout).strip()}")
    return done.stdout


def _is_mount_point(path: Path) -> bool:
    target = str(path)
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/mountinfo").read_text().splitlines():
            if line.split()[4] == target:
                return True
    return False


def _private_run_root() -> None:
    """Namespace files may only be bound on a mount that does not propagate (as `ip netns` does for its own)."""
    RUN_ROOT.mkdir(parents=True, exist_ok=True)
    if not _is_mount_point(RUN_ROOT):
        _run(["mount", "--bind", str(RUN_ROOT), str(RUN_ROOT)], "binding /run/modelship")
    _run(["mount", "--make-private", str(RUN_ROOT)], "making /run/modelship private")


class Namespaces:
    """The network and mount namespaces of cluster `name`."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.directory = RUN_ROOT / name
        self.net = self.directory / "net"
        self.mnt = self.directory / "mnt"

    def exists(self) -> bool:
        return _is_mount_point(self.net) and _is_mount_point(self.mnt)

    def create(self) -> None:
        if os.geteuid() != 0:
            raise NamespaceError("the local cluster's node needs root (namespaces, mounts, cgroups, iptables)")
        _private_run_root()
        self.directory.mkdir(parents=True, exist_ok=True)
        for path in (self.net, self.mnt):
            path.touch()
        _run(
            ["unshare", f"--net={self.net}", f"--mount={self.mnt}", "--propagation", "private", "true"],
            f"creating the namespaces of cluster {self.name!r}",
        )

    def argv(self, argv: list[str]) -> list[str]:
        """`argv` run inside both namespaces (nsenter execs it, so its pid is the program's own)."""
        return ["nsenter", f"--net={self.net}", f"--mount={self.mnt}", "--", *argv]

    def run(self, argv: list[str], what: str) -> str:
        return _run(self.argv(argv), what)

    def shield_sysctls(self, directory: Path, names: Iterable[str] = KUBELET_SYSCTLS) -> None:
        """Cover each /proc/sys file with a copy inside the mount namespace: writes there stay there."""
        directory.mkdir(parents=True, exist_ok=True)
        for name in names:
            source = Path("/proc/sys") / name
            if not source.exists():
                continue
            copy = directory / name.replace("/", ".")
            copy.write_text(source.read_text())
            self.run(["mount", "--bind", str(copy), str(source)], f"covering {source}")

    def enter_network(self) -> None:
        """Move the calling thread (and what it starts from now on) into the network namespace."""
        libc = ctypes.CDLL(None, use_errno=True)
        descriptor = os.open(self.net, os.O_RDONLY)
        try:
            if libc.setns(descriptor, CLONE_NEWNET) != 0:
                error = ctypes.get_errno()
                raise NamespaceError(f"cannot enter the network namespace {self.net}: {os.strerror(error)}")
        finally:
            os.close(descriptor)

    def call_inside(self, function: Callable[[], T]) -> T:
        """`function()` on a thread of its own inside the network namespace; the caller stays where it is."""
        outcome: dict[str, Any] = {}

        def run() -> None:
            try:
                self.enter_network()
                outcome["value"] = function()
            except BaseException as error:  # handed to the caller, who raises it
                outcome["error"] = error

        thread = threading.Thread(target=run, name=f"inside-{self.name}")
        thread.start()
        thread.join()
        if "error" in outcome:
            raise outcome["error"]
        return cast(T, outcome["value"])

    def inodes(self) -> set[int]:
        return {path.stat().st_ino for path in (self.net, self.mnt) if _is_mount_point(path)}

    def processes(self) -> list[int]:
        """Every process living in either namespace (components, containerd's shims), not this one."""
        return processes_in(self.inodes())

    def remove(self, grace: float = 5.0) -> None:
        """End every process inside, then unbind both files, which frees the namespaces and their mounts."""
        if self.directory.exists():
            stop_processes(self.processes(), grace)
            for path in (self.net, self.mnt):
                if _is_mount_point(path):
                    _run(["umount", str(path)], f"unbinding {path}")
            for path in (self.net, self.mnt):
                path.unlink(missing_ok=True)
            with contextlib.suppress(OSError):
                self.directory.rmdir()


def in_cluster_network() -> bool:
    """Whether the calling thread is inside a network namespace the harness made, whose only interfaces
    are its own (loopback, the node's veth pair, the pod bridge): traffic from it cannot leave it."""
    current = Path("/proc/thread-self/ns/net").stat().st_ino
    if not RUN_ROOT.is_dir():
        return False
    for directory in RUN_ROOT.iterdir():
        net = directory / "net"
        if _is_mount_point(net) and net.stat().st_ino == current:
            return True
    return False


def processes_in(inodes: set[int]) -> list[int]:
    if not inodes:
        return []
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        with contextlib.suppress(OSError):
            if any((entry / "ns" / kind).stat().st_ino in inodes for kind in ("net", "mnt")):
                found.append(int(entry.name))
    return found


def stop_processes(pids: list[int], grace: float) -> None:
    """SIGTERM, then SIGKILL whatever is left after `grace` seconds."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(_alive(pid) for pid in pids):
        time.sleep(0.1)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and any(_alive(pid) for pid in pids):
        time.sleep(0.05)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def stale_clusters(live: Iterable[str]) -> list[Namespaces]:
    """Namespaces of clusters not in `live` (left behind by a crash): bound files nobody brought down."""
    keep = set(live)
    if not RUN_ROOT.is_dir():
        return []
    return [Namespaces(entry.name) for entry in sorted(RUN_ROOT.iterdir()) if entry.is_dir() and entry.name not in keep]
