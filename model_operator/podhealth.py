"""Why a revision's pods cannot start, read from their container statuses: what kubelet has given up on
(a crash loop, an image it cannot get, a container it cannot create). A pod that crashed once and came
back is not a failure; one kubelet is backing off is. Pure: the adapter lists the pods."""

from __future__ import annotations

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
