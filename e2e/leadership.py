"""Which operator replica leads, what the API server's audit log says each replica wrote, and a network
partition between one operator pod and the API server."""

from __future__ import annotations

import os
import subprocess
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from kubernetes import client

from e2e.cluster.node import NODE_IP, Node
from e2e.kube import wait_until
from e2e.modelship import OPERATOR_NAMESPACE, RELEASE

LEASE = RELEASE  # the chart names the Lease after the release's full name
OPERATOR_SELECTOR = "app.kubernetes.io/name=modelship"
USER_AGENT_PREFIX = "modelship-operator ("
API_SERVICE_IP = "10.96.0.1"


def lease_holder(api: client.ApiClient) -> str:
    lease = client.CoordinationV1Api(api).read_namespaced_lease(LEASE, OPERATOR_NAMESPACE)
    return str(lease.spec.holder_identity or "")


def operator_pods(core: client.CoreV1Api) -> list[Any]:
    return list(core.list_namespaced_pod(OPERATOR_NAMESPACE, label_selector=OPERATOR_SELECTOR).items)


def leader_pod(core: client.CoreV1Api) -> Any:
    """The operator pod whose process holds the Lease (identity: pod name, '_', a per-process part)."""
    holder = lease_holder(core.api_client)
    for pod in operator_pods(core):
        if holder.rsplit("_", 1)[0] == pod.metadata.name:
            return pod
    raise AssertionError(f"no operator pod holds lease {OPERATOR_NAMESPACE}/{LEASE} (holder {holder!r})")


def container_pid(node: Node, pod: Any) -> int:
    statuses = pod.status.container_statuses or []
    assert statuses, f"{pod.metadata.name} has no running container"
    assert statuses[0].container_id, f"{pod.metadata.name} has no running container"
    return node.container_pid(statuses[0].container_id)


def leader_gauges(core: client.CoreV1Api) -> dict[str, float]:
    """modelship_operator_leader of every running operator pod, scraped from its /metrics."""
    found = {}
    for pod in operator_pods(core):
        if not pod.status.pod_ip:
            continue
        try:
            text = urllib.request.urlopen(f"http://{pod.status.pod_ip}:8000/metrics", timeout=3).read().decode()
        except OSError:
            continue
        for line in text.splitlines():
            if line.startswith("modelship_operator_leader "):
                found[pod.metadata.name] = float(line.split()[1])
    return found


@dataclass(frozen=True)
class Write:
    at: str  # the API server's requestReceivedTimestamp (RFC 3339, microseconds: sorts as text)
    identity: str
    verb: str
    resource: str
    name: str
    code: int


def operator_writes(events: list[dict[str, Any]]) -> list[Write]:
    """Every write an operator replica sent the API server, its Lease excluded, in the order received."""
    writes = []
    for event in events:
        agent = event.get("userAgent", "")
        ref = event.get("objectRef") or {}
        if not agent.startswith(USER_AGENT_PREFIX) or ref.get("resource") == "leases":
            continue
        writes.append(
            Write(
                at=event["requestReceivedTimestamp"],
                identity=agent[len(USER_AGENT_PREFIX) :].rstrip(")"),
                verb=event["verb"],
                resource=ref.get("resource", "") + ("/" + ref["subresource"] if ref.get("subresource") else ""),
                name=ref.get("name", ""),
                code=int((event.get("responseStatus") or {}).get("code", 0)),
            )
        )
    return sorted(writes, key=lambda w: w.at)


def writers_in_turn(writes: list[Write]) -> list[str]:
    """The replicas that wrote, in turn: consecutive writes of one replica are one turn. A replica that
    writes again after another has written means two writers overlapped."""
    turns: list[str] = []
    for write in writes:
        if not turns or turns[-1] != write.identity:
            assert write.identity not in turns, (
                f"{write.identity} wrote again ({write.verb} {write.resource} {write.name} at {write.at}) "
                f"after {turns[-1]} had written: two operators acted at once"
            )
            turns.append(write.identity)
    return turns


@contextmanager
def cut_from_api(node: Node, pod: Any) -> Iterator[None]:
    """Drop everything the pod sends to the API server (its Service address and the node's), inside the
    pod's own network namespace; healed on exit. The namespace is held open by a file descriptor, so the
    rules can be removed after the container has exited and been restarted."""
    handle = os.open(f"/proc/{container_pid(node, pod)}/ns/net", os.O_RDONLY)
    rules = [["-d", API_SERVICE_IP, "-j", "DROP"], ["-d", NODE_IP, "-p", "tcp", "--dport", "6443", "-j", "DROP"]]

    def iptables(*args: str) -> None:
        subprocess.run(
            ["nsenter", f"--net=/proc/self/fd/{handle}", "iptables", "-w", *args],
            check=True,
            capture_output=True,
            timeout=30,
            pass_fds=(handle,),
        )

    try:
        for rule in rules:
            iptables("-I", "OUTPUT", *rule)
        yield
    finally:
        for rule in rules:
            iptables("-D", "OUTPUT", *rule)
        os.close(handle)


def wait_for_new_leader(api: client.ApiClient, previous: str, timeout: float) -> str:
    holder: dict[str, str] = {}

    def changed() -> bool:
        holder["now"] = lease_holder(api)
        return holder["now"] not in ("", previous)

    wait_until(changed, f"a replica other than {previous} to hold the lease", timeout)
    return holder["now"]
