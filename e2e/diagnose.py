"""Say why a namespace is not ready: which Deployments and pods are not, their conditions, their
containers' states, their events and the last lines of their logs. Shown whenever a wait of the harness,
the scenarios or the demo times out, so a failure on a fresh machine explains itself.

`report` is pure (objects as the API returns them, in their JSON form); `explain_namespace` reads them."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

LOG_LINES = 20
EVENTS_PER_OBJECT = 8


def _ready(pod: Mapping[str, Any]) -> bool:
    conditions = pod.get("status", {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def _finished(pod: Mapping[str, Any]) -> bool:
    return pod.get("status", {}).get("phase") in ("Succeeded",)


def _container_state(status: Mapping[str, Any]) -> str:
    state = status.get("state") or {}
    parts = []
    for kind in ("waiting", "running", "terminated"):
        if kind in state:
            detail = state[kind] or {}
            words = [kind]
            if detail.get("reason"):
                words.append(str(detail["reason"]))
            if "exitCode" in detail:
                words.append(f"exit {detail['exitCode']}")
            if detail.get("message"):
                words.append(f"({detail['message']})")
            parts.append(" ".join(words))
    parts.append(f"ready={bool(status.get('ready'))}")
    parts.append(f"restarts {status.get('restartCount', 0)}")
    last = (status.get("lastState") or {}).get("terminated")
    if last:
        parts.append(f"last terminated exit {last.get('exitCode')} ({last.get('reason', '')})")
    return ", ".join(parts)


def _false_conditions(obj: Mapping[str, Any]) -> list[str]:
    out = []
    for condition in obj.get("status", {}).get("conditions") or []:
        if condition.get("status") != "True":
            reason = condition.get("reason") or ""
            message = condition.get("message") or ""
            out.append(f"{condition.get('type')}={condition.get('status')} {reason}: {message}".rstrip(": "))
    return out


def _events_of(kind: str, name: str, events: Sequence[Mapping[str, Any]]) -> list[str]:
    mine = [
        e
        for e in events
        if (e.get("involvedObject") or {}).get("kind") == kind and (e.get("involvedObject") or {}).get("name") == name
    ]
    mine.sort(key=lambda e: str(e.get("lastTimestamp") or e.get("eventTime") or ""))
    return [
        f"{e.get('type', '')} {e.get('reason', '')} (x{e.get('count') or 1}): {e.get('message', '')}"
        for e in mine[-EVENTS_PER_OBJECT:]
    ]


def report(
    namespace: str,
    deployments: Sequence[Mapping[str, Any]],
    pods: Sequence[Mapping[str, Any]],
    events: Sequence[Mapping[str, Any]],
    logs: Mapping[tuple[str, str], str],
) -> str:
    """What is not ready in `namespace`, and why, as lines a person reads. `logs` maps (pod, container) to
    the tail of that container's log."""
    lines: list[str] = []
    for deployment in deployments:
        name = deployment["metadata"]["name"]
        status = deployment.get("status") or {}
        wanted = (deployment.get("spec") or {}).get("replicas", 1)
        ready = status.get("readyReplicas") or 0
        if ready >= wanted and status.get("updatedReplicas", wanted) >= wanted:
            continue
        lines.append(f"deployment {namespace}/{name}: {ready}/{wanted} ready")
        lines += [f"  {c}" for c in _false_conditions(deployment)]
        lines += [f"  event: {e}" for e in _events_of("Deployment", name, events)]
    for pod in pods:
        if _ready(pod) or _finished(pod) or pod["metadata"].get("deletionTimestamp"):
            continue
        name = pod["metadata"]["name"]
        status = pod.get("status") or {}
        lines.append(f"pod {namespace}/{name}: phase {status.get('phase', 'Unknown')}, not ready")
        lines += [f"  {c}" for c in _false_conditions(pod)]
        for container in status.get("containerStatuses") or []:
            lines.append(f"  container {container['name']}: {_container_state(container)}")
        lines += [f"  event: {e}" for e in _events_of("Pod", name, events)]
        for container in pod.get("spec", {}).get("containers") or []:
            tail = logs.get((name, container["name"]), "").rstrip("\n")
            if tail:
                lines.append(f"  last lines of {container['name']}'s log:")
                lines += [f"    | {line}" for line in tail.splitlines()[-LOG_LINES:]]
    if not lines:
        return f"every Deployment and pod in namespace {namespace} is ready"
    return "\n".join([f"not ready in namespace {namespace}:", *lines])


def explain_namespace(api: client.ApiClient, namespace: str) -> str:
    """Read the namespace's Deployments, pods, events and log tails, and `report` on them."""
    core, apps = client.CoreV1Api(api), client.AppsV1Api(api)

    def raw(items: list[Any]) -> list[dict[str, Any]]:
        return [api.sanitize_for_serialization(item) for item in items]

    pods = raw(core.list_namespaced_pod(namespace).items)
    logs: dict[tuple[str, str], str] = {}
    for pod in pods:
        if _ready(pod) or _finished(pod):
            continue
        restarted = {c["name"] for c in pod.get("status", {}).get("containerStatuses") or [] if c.get("restartCount")}
        for container in pod["spec"].get("containers") or []:
            key = (pod["metadata"]["name"], container["name"])
            logs[key] = _log_tail(core, namespace, *key, previous=False)
            if not logs[key].strip() and container["name"] in restarted:
                # Waiting in back-off, the new container has no log yet: the crashed one says why.
                logs[key] = _log_tail(core, namespace, *key, previous=True)
    return report(
        namespace,
        raw(apps.list_namespaced_deployment(namespace).items),
        pods,
        raw(core.list_namespaced_event(namespace).items),
        logs,
    )


def _log_tail(core: client.CoreV1Api, namespace: str, pod: str, container: str, previous: bool) -> str:
    try:
        text: str | None = core.read_namespaced_pod_log(
            pod, namespace, container=container, tail_lines=LOG_LINES, previous=previous
        )
        return text or ""  # the client gives None for an empty log
    except ApiException as error:
        return f"(no log: {error.status} {error.reason})"


def explainer(api: client.ApiClient, *namespaces: str) -> Callable[[], str]:
    """An `explain` for e2e.kube.wait_until."""
    return lambda: "\n".join(explain_namespace(api, namespace) for namespace in namespaces)
