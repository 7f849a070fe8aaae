"""Background processes that outlive the command that started them: pid files, liveness, log tails and
a stop that always ends the whole process group."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path


class ComponentDied(RuntimeError):
    """A control plane component exited; the message holds the tail of its log."""


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now (the kernel picks it)."""
    with socket.socket() as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def tail(path: Path, lines: int = 30) -> str:
    if not path.exists():
        return "(no log written)"
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child still answers kill(0); look at its state.
    with contextlib.suppress(OSError):
        status = Path(f"/proc/{pid}/stat").read_text()
        if status.rsplit(")", 1)[1].split()[0] == "Z":
            return False
    return True


@dataclass
class Background:
    """One component: started detached in its own session, tracked by a pid file."""

    name: str
    argv: list[str]
    log: Path
    pid_file: Path
    env: dict[str, str] | None = None
    cwd: Path | None = None
    pass_fds: tuple[int, ...] = ()  # descriptors the process keeps, e.g. a lock it holds while it runs

    def start(self) -> None:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        self.pid_file.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as sink:
            process = subprocess.Popen(
                self.argv,
                stdout=sink,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                env=self.env,
                cwd=self.cwd,
                pass_fds=self.pass_fds,
            )
        self.pid_file.write_text(str(process.pid))
        self._process = process

    @property
    def pid(self) -> int | None:
        try:
            return int(self.pid_file.read_text())
        except (OSError, ValueError):
            return None

    def alive(self) -> bool:
        process = getattr(self, "_process", None)
        if process is not None:
            return process.poll() is None
        pid = self.pid
        return pid is not None and pid_alive(pid)

    def check(self) -> None:
        """Raise ComponentDied, with the log's tail, when the process is gone."""
        if not self.alive():
            raise ComponentDied(f"{self.name} is not running. Last lines of {self.log}:\n{tail(self.log)}")

    def stop(self, grace: float = 10.0) -> None:
        pid = self.pid
        if pid is None:
            return
        _signal_group(pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and _group_alive(pid):
            self._reap()
            time.sleep(0.1)
        if _group_alive(pid):
            _signal_group(pid, signal.SIGKILL)
            time.sleep(0.2)
        self._reap()
        self.pid_file.unlink(missing_ok=True)

    def _reap(self) -> None:
        process = getattr(self, "_process", None)
        if process is not None:
            with contextlib.suppress(Exception):
                process.poll()


def _signal_group(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, sig)


def _group_alive(pgid: int) -> bool:
    """Whether any process of the group (the component and its children) is still alive."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            if int(fields[2]) == pgid and fields[0] != "Z":
                return True
    return False


def wait_for(condition: object, what: str, timeout: float, components: list[Background], interval: float = 0.2) -> None:
    """Poll `condition()` until true; fail fast, naming the component, if any component dies."""
    assert callable(condition)
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        for component in components:
            component.check()
        try:
            if condition():
                return
        except Exception as error:  # the condition probes a server that may not be up yet
            last_error = error
        time.sleep(interval)
    detail = f" (last error: {last_error})" if last_error else ""
    logs = "; ".join(f"{c.name}: {c.log}" for c in components)
    raise TimeoutError(f"{what} did not happen within {timeout:.0f}s{detail}. Logs: {logs}")
