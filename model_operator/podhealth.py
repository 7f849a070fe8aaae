"""Why a revision's pods cannot start, read from their container statuses: what kubelet has given up on
(a crash loop, an image it cannot get, a container it cannot create). A pod that crashed once and came
back is not a failure; one kubelet is backing off is. Pure: the adapter lists the pods, when PodChecks says."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# Waiting reasons that do not end by themselves: the pod will not become ready without a change.
STUCK = frozenset(
    {
        "CrashLoopBackOff",
        "ErrImagePull",
        "ImagePullBackOff",
        "ErrImageNeverPull",
        "InvalidImageName",
        "CreateContainerConfigError",
        "CreateContainerError",
        "RunContainerError",
    }
)


def pod_failures(pods: list[dict[str, Any]]) -> tuple[str, ...]:
    """One line per stuck container, e.g. "pod chat-1a-x: runtime OOMKilled (exit 137), 3 restarts"."""
    found = []
    for pod in pods:
        name = (pod.get("metadata") or {}).get("name", "?")
        for container in (pod.get("status") or {}).get("containerStatuses") or []:
            waiting = (container.get("state") or {}).get("waiting") or {}
            reason = waiting.get("reason")
            if reason not in STUCK:
                continue
            terminated = (container.get("lastState") or {}).get("terminated") or {}
            restarts = int(container.get("restartCount") or 0)
            if reason == "CrashLoopBackOff" and terminated:
                why = f"{terminated.get('reason') or 'exited'} (exit {terminated.get('exitCode')})"
                found.append(f"pod {name}: {container.get('name')} {why}, {restarts} restarts")
            else:
                message = f": {waiting['message']}" if waiting.get("message") else ""
                found.append(f"pod {name}: {container.get('name')} {reason}{message}")
    return tuple(sorted(found))


@dataclass
class PodChecks:
    """When each revision's pods are listed, for one ModelDeployment: a revision short of ready pods is
    listed once it has been short for `period` seconds, then every `period` while it stays short; what the
    last listing found stands until the next. A revision with all its pods ready has nothing to find."""

    period: float
    short_since: dict[str, float] = field(default_factory=dict)
    listed_at: dict[str, float] = field(default_factory=dict)
    found: dict[str, tuple[str, ...]] = field(default_factory=dict)

    def due(self, short: set[str], now: float) -> list[str]:
        """The revisions whose pods to list now, of those `short` of ready pods."""
        for revision in set(self.short_since) - short:
            del self.short_since[revision]
            self.listed_at.pop(revision, None)
            self.found.pop(revision, None)
        due = []
        for revision in sorted(short):
            since = self.short_since.setdefault(revision, now)
            if now - self.listed_at.get(revision, since) >= self.period:
                due.append(revision)
        return due

    def listed(self, revision: str, failures: tuple[str, ...], now: float) -> None:
        self.listed_at[revision] = now
        self.found[revision] = failures

    def failures(self, revision: str) -> tuple[str, ...]:
        return self.found.get(revision, ())
