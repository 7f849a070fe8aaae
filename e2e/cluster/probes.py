"""Container probes as the kubelet runs them: httpGet, tcpSocket and exec, with their thresholds."""

from __future__ import annotations

import socket
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Any


def _port(container: dict[str, Any], port: int | str) -> int:
    if isinstance(port, int) or str(port).isdigit():
        return int(port)
    for declared in container.get("ports", []):
        if declared.get("name") == port:
            return int(declared["containerPort"])
    raise ValueError(f"probe names port {port!r}, which container {container['name']!r} does not declare")


def probe_once(spec: dict[str, Any], container: dict[str, Any], pod_ip: str, pid: int | None) -> bool:
    """Run a probe once; True on success. Never raises for a failing target."""
    timeout = float(spec.get("timeoutSeconds", 1))
    try:
        if "httpGet" in spec:
            action = spec["httpGet"]
            scheme = action.get("scheme", "HTTP").lower()
            host = action.get("host") or pod_ip
            url = f"{scheme}://{host}:{_port(container, action['port'])}{action.get('path', '/')}"
            request = urllib.request.Request(
                url, headers={h["name"]: h["value"] for h in action.get("httpHeaders", [])}
            )
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return bool(200 <= response.status < 400)
        if "tcpSocket" in spec:
            action = spec["tcpSocket"]
            with socket.create_connection(
                (action.get("host") or pod_ip, _port(container, action["port"])), timeout=timeout
            ):
                return True
        if "exec" in spec and pid is not None:
            command = ["nsenter", "-t", str(pid), "-m", "--", *spec["exec"]["command"]]
            return subprocess.run(command, capture_output=True, timeout=timeout, check=False).returncode == 0
    except (OSError, urllib.error.URLError, subprocess.TimeoutExpired, ValueError):
        return False
    return False


@dataclass
class ProbeTracker:
    """One probe's schedule and consecutive results."""

    spec: dict[str, Any] | None
    started: float = field(default_factory=time.monotonic)
    next_run: float = 0.0
    successes: int = 0
    failures: int = 0
    result: bool | None = None  # None until thresholds decide

    def due(self, now: float) -> bool:
        if self.spec is None:
            return False
        if now < self.started + float(self.spec.get("initialDelaySeconds", 0)):
            return False
        return now >= self.next_run

    def record(self, ok: bool, now: float) -> None:
        assert self.spec is not None
        self.next_run = now + float(self.spec.get("periodSeconds", 10))
        if ok:
            self.successes, self.failures = self.successes + 1, 0
            if self.successes >= int(self.spec.get("successThreshold", 1)):
                self.result = True
        else:
            self.failures, self.successes = self.failures + 1, 0
            if self.failures >= int(self.spec.get("failureThreshold", 3)):
                self.result = False

    def reset(self) -> None:
        self.started = time.monotonic()
        self.next_run = 0.0
        self.successes = self.failures = 0
        self.result = None
