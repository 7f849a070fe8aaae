"""One pod on the local node: set up its address and volumes, run its containers as local processes,
probe them, restart them per restartPolicy with back-off, report status, and stop them on deletion."""

from __future__ import annotations

import contextlib
import datetime
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .podspec import (
    REPO_ROOT,
    PodNotReadyToStart,
    command_line,
    container_env,
    identity,
    mount_plan,
    prepare_volumes,
    read_only_root,
)
from .probes import ProbeTracker, probe_once

if TYPE_CHECKING:
    from .podrunner import PodRunner

log = logging.getLogger("podrunner")
TICK_SECONDS = 0.25
MAX_BACKOFF_SECONDS = 300.0
TOKEN_REFRESH_SECONDS = 600.0


def image_paths() -> list[str]:
    """What stands in for the container image: the repository and the Python environment."""
    return sorted({str(REPO_ROOT), sys.prefix, sys.base_prefix})


def now_rfc3339() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Container:
    spec: dict[str, Any]
    process: subprocess.Popen[bytes] | None = None
    started_at: str | None = None
    started_monotonic: float = 0.0
    restart_count: int = 0
    crashes_in_a_row: int = 0
    last_terminated: dict[str, Any] | None = None
    terminated: dict[str, Any] | None = None  # final: will not be restarted
    waiting: dict[str, str] | None = field(default_factory=lambda: {"reason": "ContainerCreating"})
    restart_at: float = 0.0
    readiness: ProbeTracker = field(default_factory=lambda: ProbeTracker(None))
    liveness: ProbeTracker = field(default_factory=lambda: ProbeTracker(None))
    startup: ProbeTracker = field(default_factory=lambda: ProbeTracker(None))

    @property
    def name(self) -> str:
        return str(self.spec["name"])

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    @property
    def ready(self) -> bool:
        if not self.running or (self.startup.spec is not None and self.startup.result is not True):
            return False
        return self.readiness.spec is None or self.readiness.result is True


class PodSupervisor(threading.Thread):
    """Runs in its own thread for the pod's whole life on this node."""

    def __init__(self, runner: PodRunner, pod: dict[str, Any]) -> None:
        meta = pod["metadata"]
        super().__init__(name=f"pod-{meta['namespace']}-{meta['name']}", daemon=True)
        self.runner = runner
        self.pod = pod
        self.uid = meta["uid"]
        self.directory = runner.pods_dir / f"{meta['namespace']}_{meta['name']}_{self.uid}"
        self.containers = [Container(spec) for spec in pod["spec"]["containers"]]
        self.pod_ip: str | None = pod.get("status", {}).get("podIP")
        self.volumes: dict[str, tuple[str, bool]] | None = None
        self.setup_error: str | None = None
        self.started_at = pod.get("status", {}).get("startTime") or now_rfc3339()
        self.removed = threading.Event()  # the object is gone from the API: kill at once
        self.stopping = threading.Event()  # the runner itself is shutting down
        self._last_status: str | None = None
        self._token_written = 0.0
        self._lock = threading.Lock()

    # ---- inputs from the runner -------------------------------------------------------------------
    def update(self, pod: dict[str, Any]) -> None:
        with self._lock:
            self.pod = pod

    @property
    def name(self) -> str:  # type: ignore[override]
        return f"{self.pod['metadata']['namespace']}/{self.pod['metadata']['name']}"

    # ---- the loop ---------------------------------------------------------------------------------
    def run(self) -> None:
        try:
            self._loop()
        except Exception:
            log.exception("pod %s: supervisor failed", self.name)
        finally:
            self._kill_all(grace=0 if self.removed.is_set() else 5)

    def _loop(self) -> None:
        while True:
            if self.removed.is_set():
                return
            if self.stopping.is_set():
                # The node is going away (cluster down): a short grace, as on a node shutdown.
                self._kill_all(grace=min(self._grace(), 5.0))
                return
            with self._lock:
                pod = self.pod
            if pod["metadata"].get("deletionTimestamp"):
                self._terminate(pod)
                return
            if self.volumes is None:
                self._set_up(pod)
            else:
                self._refresh_tokens(pod)
                for container in self.containers:
                    self._manage(container, pod)
            self._report(pod)
            time.sleep(TICK_SECONDS)

    def _set_up(self, pod: dict[str, Any]) -> None:
        try:
            if self.pod_ip is None:
                self.pod_ip = self.runner.allocate_ip(self.uid)
            self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
            (self.directory / "logs").mkdir(exist_ok=True)
            pod = {**pod, "status": {**pod.get("status", {}), "podIP": self.pod_ip}}
            self.volumes = prepare_volumes(pod, self.directory / "volumes", self.runner.reader)
            self._token_written = time.monotonic()
            self.setup_error = None
        except PodNotReadyToStart as waiting:
            self.setup_error = str(waiting)
        except Exception as error:  # a spec this runner cannot run: say so in the status, keep trying
            self.setup_error = f"{type(error).__name__}: {error}"
            log.warning("pod %s: cannot set up: %s", self.name, self.setup_error)
            time.sleep(1.0)

    def _refresh_tokens(self, pod: dict[str, Any]) -> None:
        """Projected tokens expire; rewrite them as the kubelet does, well before they do."""
        if time.monotonic() - self._token_written < TOKEN_REFRESH_SECONDS:
            return
        self._token_written = time.monotonic()
        with contextlib.suppress(Exception):
            pod = {**pod, "status": {**pod.get("status", {}), "podIP": self.pod_ip}}
            prepare_volumes(
                {
                    **pod,
                    "spec": {**pod["spec"], "volumes": [v for v in pod["spec"].get("volumes", []) if "projected" in v]},
                },
                self.directory / "volumes",
                self.runner.reader,
            )

    # ---- containers -------------------------------------------------------------------------------
    def _manage(self, container: Container, pod: dict[str, Any]) -> None:
        now = time.monotonic()
        if container.terminated is not None:
            return
        if container.process is None:
            if now >= container.restart_at:
                self._start(container, pod)
            return
        code = container.process.poll()
        if code is not None:
            self._exited(container, pod, code)
            return
        self._probe(container, pod, now)

    def _start(self, container: Container, pod: dict[str, Any]) -> None:
        assert self.volumes is not None
        assert self.pod_ip is not None
        spec = container.spec
        view = {**pod, "status": {**pod.get("status", {}), "podIP": self.pod_ip, "hostIP": "127.0.0.1"}}
        try:
            user = identity(pod, spec)
            env = container_env(view, spec, {**self.runner.base_env(view), "HOME": user.home}, self.runner.reader)
            argv = command_line(spec, env, self.runner.entrypoint(spec.get("image", "")))
            plan = {
                "argv": argv,
                "env": env,
                "workingDir": spec.get("workingDir"),
                "mounts": mount_plan(spec, self.volumes),
                "imagePaths": image_paths(),
                "readOnlyRootFilesystem": read_only_root(pod, spec),
                "user": user.plan(),
            }
        except PodNotReadyToStart as waiting:
            container.waiting = {"reason": "CreateContainerConfigError", "message": str(waiting)}
            container.restart_at = time.monotonic() + 2
            return
        except ValueError as error:
            container.waiting = {"reason": "CreateContainerError", "message": str(error)}
            container.restart_at = time.monotonic() + 5
            return
        rootfs = self.directory / "rootfs" / container.name
        rootfs.mkdir(parents=True, exist_ok=True)
        plan["rootfs"] = str(rootfs)
        plan_path = self.directory / f"{container.name}.plan.json"
        plan_path.write_text(json.dumps(plan))
        plan_path.chmod(0o600)  # it holds the environment, secrets included
        log_path = self.log_path(container.name)
        if log_path.exists() and container.restart_count > 0:
            log_path.replace(self.log_path(container.name, previous=True))
        with log_path.open("ab") as sink:
            container.process = subprocess.Popen(
                [
                    "unshare",
                    "--mount",
                    "--propagation",
                    "private",
                    "--",
                    sys.executable,
                    "-m",
                    "e2e.cluster.podexec",
                    str(plan_path),
                ],
                stdout=sink,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                env={
                    "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
                    "PYTHONPATH": str(REPO_ROOT),
                    "MODELSHIP_CLUSTER_ROOT": str(self.runner.root),
                },
            )
        container.started_at = now_rfc3339()
        container.started_monotonic = time.monotonic()
        container.waiting = None
        container.readiness = ProbeTracker(spec.get("readinessProbe"))
        container.liveness = ProbeTracker(spec.get("livenessProbe"))
        container.startup = ProbeTracker(spec.get("startupProbe"))
        self.runner.event(pod, "Started", f"Started container {container.name} (pid {container.process.pid})")

    def _exited(self, container: Container, pod: dict[str, Any], code: int) -> None:
        finished = now_rfc3339()
        ran_for = time.monotonic() - container.started_monotonic
        record = {
            "exitCode": code,
            "reason": "Completed" if code == 0 else "Error",
            "startedAt": container.started_at,
            "finishedAt": finished,
        }
        if code < 0:
            record["exitCode"], record["signal"], record["reason"] = 128 - code, -code, "Error"
        container.process = None
        policy = pod["spec"].get("restartPolicy", "Always")
        if policy == "Never" or (policy == "OnFailure" and code == 0):
            container.terminated = record
            return
        container.last_terminated = record
        container.crashes_in_a_row = 0 if ran_for > 2 * MAX_BACKOFF_SECONDS else container.crashes_in_a_row + 1
        delay = min(self.runner.backoff_base * 2 ** (container.crashes_in_a_row - 1), MAX_BACKOFF_SECONDS)
        container.restart_at = time.monotonic() + delay
        container.restart_count += 1
        container.waiting = {
            "reason": "CrashLoopBackOff",
            "message": f"back-off {delay:.0f}s restarting failed container={container.name} "
            f"pod={pod['metadata']['name']}_{pod['metadata']['namespace']}",
        }
        self.runner.event(pod, "BackOff", f"Back-off restarting failed container {container.name}", kind="Warning")

    def _probe(self, container: Container, pod: dict[str, Any], now: float) -> None:
        assert self.pod_ip is not None
        assert container.process is not None
        pid = container.process.pid
        if container.startup.spec is not None and container.startup.result is not True:
            if container.startup.due(now):
                container.startup.record(probe_once(container.startup.spec, container.spec, self.pod_ip, pid), now)
                if container.startup.result is False:
                    self._restart_unhealthy(container, pod, "Startup probe failed")
            return
        if container.readiness.due(now):
            assert container.readiness.spec is not None
            container.readiness.record(probe_once(container.readiness.spec, container.spec, self.pod_ip, pid), now)
        if container.liveness.due(now):
            assert container.liveness.spec is not None
            container.liveness.record(probe_once(container.liveness.spec, container.spec, self.pod_ip, pid), now)
            if container.liveness.result is False:
                self._restart_unhealthy(container, pod, "Liveness probe failed")

    def _restart_unhealthy(self, container: Container, pod: dict[str, Any], why: str) -> None:
        self.runner.event(pod, "Unhealthy", f"{why}; container {container.name} will be restarted", kind="Warning")
        self._stop_process(container, self._grace())
        # The exit is then seen by _manage and handled as any other exit, back-off included.

    # ---- stopping ---------------------------------------------------------------------------------
    def _grace(self) -> float:
        meta_grace = self.pod["metadata"].get("deletionGracePeriodSeconds")
        spec_grace = self.pod["spec"].get("terminationGracePeriodSeconds", 30)
        return float(meta_grace if meta_grace is not None else spec_grace)

    def _stop_process(self, container: Container, grace: float) -> None:
        process = container.process
        if process is None or process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=max(grace, 0.0))
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
        # Children that left the group still die with it: kill what is left of the session.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)

    def _kill_all(self, grace: float) -> None:
        threads = [threading.Thread(target=self._stop_process, args=(c, grace)) for c in self.containers]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    def _terminate(self, pod: dict[str, Any]) -> None:
        """Graceful deletion: SIGTERM, SIGKILL after the grace period, then remove the object."""
        self.runner.event(pod, "Killing", f"Stopping containers (grace {self._grace():.0f}s)")
        self._kill_all(self._grace())
        self.runner.finish_deletion(pod)
        self.cleanup()

    def cleanup(self) -> None:
        self.runner.release_ip(self.uid)
        for path in self.directory.glob("*.plan.json"):
            path.unlink(missing_ok=True)
        volumes = self.directory / "volumes"
        if volumes.exists():
            shutil.rmtree(volumes, ignore_errors=True)

    def log_path(self, container: str, previous: bool = False) -> Path:
        return self.directory / "logs" / (f"{container}.previous.log" if previous else f"{container}.log")

    # ---- status -----------------------------------------------------------------------------------
    def _container_status(self, container: Container) -> dict[str, Any]:
        status: dict[str, Any] = {
            "name": container.name,
            "image": container.spec.get("image", ""),
            "imageID": "",
            "restartCount": container.restart_count,
            "ready": container.ready,
            "started": container.running and (container.startup.spec is None or container.startup.result is True),
        }
        if container.running:
            status["state"] = {"running": {"startedAt": container.started_at}}
            status["containerID"] = f"local://{container.process.pid}" if container.process else ""
        elif container.terminated is not None:
            status["state"] = {"terminated": container.terminated}
        else:
            status["state"] = {"waiting": container.waiting or {"reason": "ContainerCreating"}}
        if container.last_terminated is not None:
            status["lastState"] = {"terminated": container.last_terminated}
        return status

    def status(self) -> dict[str, Any]:
        statuses = [self._container_status(c) for c in self.containers]
        all_ready = bool(self.containers) and all(c.ready for c in self.containers)
        if self.volumes is None:
            phase = "Pending"
        elif all(c.terminated is not None for c in self.containers):
            phase = (
                "Succeeded"
                if all(c.terminated and c.terminated["exitCode"] == 0 for c in self.containers)
                else "Failed"
            )
        elif any(c.running or c.restart_count for c in self.containers):
            phase = "Running"
        else:
            phase = "Pending"

        def condition(kind: str, ok: bool, reason: str | None = None, message: str | None = None) -> dict[str, Any]:
            entry: dict[str, Any] = {"type": kind, "status": "True" if ok else "False"}
            if reason:
                entry["reason"] = reason
            if message:
                entry["message"] = message
            return entry

        not_ready = [c.name for c in self.containers if not c.ready]
        reason = None if all_ready else "ContainersNotReady"
        message = None if all_ready else f"containers with unready status: [{' '.join(not_ready)}]"
        status: dict[str, Any] = {
            "phase": phase,
            "hostIP": "127.0.0.1",
            "hostIPs": [{"ip": "127.0.0.1"}],
            "startTime": self.started_at,
            "conditions": [
                condition("PodReadyToStartContainers", self.volumes is not None),
                condition("Initialized", True),
                condition("ContainersReady", all_ready, reason, message),
                condition("Ready", all_ready, reason, message),
                condition("PodScheduled", True),
            ],
            "containerStatuses": statuses,
        }
        if self.pod_ip:
            status["podIP"] = self.pod_ip
            status["podIPs"] = [{"ip": self.pod_ip}]
        if self.setup_error:
            for entry in statuses:
                entry["state"] = {"waiting": {"reason": "ContainerCreating", "message": self.setup_error}}
        return status

    def _report(self, pod: dict[str, Any]) -> None:
        status = self.status()
        comparable = json.dumps(status, sort_keys=True)
        if comparable == self._last_status:
            return
        if self.runner.patch_status(pod, status):
            self._last_status = comparable
