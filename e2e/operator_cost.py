"""What the running operator costs over a window: its process' CPU time, the API server's request count on
ModelDeployments, and how often each ModelDeployment was written (a spinning reconcile shows as writes)."""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import urllib3
from kubernetes import client, watch

from e2e.cluster.node import Node
from e2e.kube import Kubectl
from e2e.leadership import container_pid, leader_pod

CLOCK_TICKS = 100  # USER_HZ on Linux


def operator_pid(core: client.CoreV1Api, node: Node) -> int:
    """The host pid of the leading operator replica's process (the standby does no work)."""
    return container_pid(node, leader_pod(core))


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime + stime


def modeldeployment_requests(kubectl: Kubectl) -> float:
    """apiserver_request_total over every verb on modeldeployments (and its status subresource)."""
    metrics = kubectl("get", "--raw", "/metrics").stdout
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        if line.startswith("apiserver_request_total{") and 'resource="modeldeployments"' in line
    )


@dataclass(frozen=True)
class Cost:
    seconds: float
    cpu_seconds: float
    api_requests: float
    writes: dict[str, int]  # ModelDeployment name -> MODIFIED events seen

    @property
    def cpu_share(self) -> float:
        """Cores the operator used, on average."""
        return self.cpu_seconds / self.seconds

    @property
    def requests_per_second(self) -> float:
        return self.api_requests / self.seconds

    def writes_per_second(self, name: str) -> float:
        return self.writes.get(name, 0) / self.seconds

    def line(self, label: str, objects: int) -> str:
        busiest = max(self.writes.values(), default=0) / self.seconds
        return (
            f"{label}: {objects} ModelDeployments over {self.seconds:.0f}s: operator CPU {self.cpu_share:.3f} cores "
            f"({self.cpu_share / objects:.4f} per object), {self.requests_per_second:.2f} API requests/s on "
            f"modeldeployments ({self.requests_per_second / objects:.3f} per object), busiest object "
            f"{busiest:.2f} writes/s"
        )


def measure(
    core: client.CoreV1Api,
    custom: client.CustomObjectsApi,
    kubectl: Kubectl,
    node: Node,
    namespace: str,
    seconds: float,
) -> Cost:
    """Watch `namespace`'s ModelDeployments for `seconds` while counting what the operator spends."""
    writes: Counter[str] = Counter()
    listing = custom.list_namespaced_custom_object("modelship.io", "v1alpha1", namespace, "modeldeployments")
    watcher = watch.Watch()

    def count() -> None:
        stream = watcher.stream(
            custom.list_namespaced_custom_object,
            "modelship.io",
            "v1alpha1",
            namespace,
            "modeldeployments",
            resource_version=listing["metadata"]["resourceVersion"],
            timeout_seconds=int(seconds) + 5,
        )
        try:
            for event in stream:
                if event["type"] == "MODIFIED":
                    writes[event["object"]["metadata"]["name"]] += 1
        except urllib3.exceptions.ProtocolError:
            pass  # the stream was stopped at the end of the window

    pid = operator_pid(core, node)
    thread = threading.Thread(target=count, daemon=True)
    thread.start()
    started, cpu, requests = time.monotonic(), cpu_seconds(pid), modeldeployment_requests(kubectl)
    time.sleep(seconds)  # the window itself: what is measured is what happens in it
    cost = Cost(
        seconds=time.monotonic() - started,
        cpu_seconds=cpu_seconds(pid) - cpu,
        api_requests=modeldeployment_requests(kubectl) - requests,
        writes=dict(writes),
    )
    watcher.stop()
    thread.join(timeout=10)
    return cost
