"""What a timed-out wait says: the objects that are not ready, their states, events and log tails."""

from __future__ import annotations

from typing import Any

import pytest

from e2e.diagnose import report


def pod(name: str, ready: bool, **status: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": name},
        "spec": {"containers": [{"name": "operator"}]},
        "status": {"conditions": [{"type": "Ready", "status": "True" if ready else "False"}], **status},
    }


CRASHING = pod(
    "modelship-7d9-x",
    False,
    phase="Running",
    containerStatuses=[
        {
            "name": "operator",
            "ready": False,
            "restartCount": 3,
            "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 40s"}},
            "lastState": {"terminated": {"exitCode": 1, "reason": "Error"}},
        }
    ],
)
EVENT = {
    "involvedObject": {"kind": "Pod", "name": "modelship-7d9-x"},
    "type": "Warning",
    "reason": "BackOff",
    "count": 4,
    "message": "Back-off restarting failed container operator",
    "lastTimestamp": "2026-12-02T04:00:00Z",
}
DEPLOYMENT = {
    "metadata": {"name": "modelship"},
    "spec": {"replicas": 1},
    "status": {
        "readyReplicas": 0,
        "conditions": [{"type": "Available", "status": "False", "reason": "MinimumReplicasUnavailable"}],
    },
}
LOG = "starting\npodexec: mount ... failed: mount point is not a directory\n"


@pytest.mark.parametrize(
    ("deployments", "pods", "events", "logs", "present", "absent"),
    [
        (
            [DEPLOYMENT],
            [CRASHING, pod("router-1", True, phase="Running")],
            [EVENT],
            {("modelship-7d9-x", "operator"): LOG},
            [
                "deployment ns/modelship: 0/1 ready",
                "Available=False MinimumReplicasUnavailable",
                "pod ns/modelship-7d9-x: phase Running, not ready",
                "container operator: waiting CrashLoopBackOff (back-off 40s), ready=False, restarts 3, "
                "last terminated exit 1 (Error)",
                "event: Warning BackOff (x4): Back-off restarting failed container operator",
                "| podexec: mount ... failed: mount point is not a directory",
            ],
            ["router-1"],
        ),
        (
            [],
            [
                pod(
                    "pending-1",
                    False,
                    phase="Pending",
                    conditions=[
                        {"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": "0/1 nodes"}
                    ],
                )
            ],
            [],
            {},
            ["pod ns/pending-1: phase Pending", "PodScheduled=False Unschedulable: 0/1 nodes"],
            ["last lines"],
        ),
        (
            [{**DEPLOYMENT, "status": {"readyReplicas": 1, "updatedReplicas": 1}}],
            [pod("ok", True, phase="Running")],
            [],
            {},
            ["every Deployment and pod in namespace ns is ready"],
            ["not ready in"],
        ),
    ],
)
def test_report_names_what_is_not_ready_and_why(
    deployments: list[dict[str, Any]],
    pods: list[dict[str, Any]],
    events: list[dict[str, Any]],
    logs: dict[tuple[str, str], str],
    present: list[str],
    absent: list[str],
) -> None:
    text = report("ns", deployments, pods, events, logs)
    for expected in present:
        assert expected in text
    for unexpected in absent:
        assert unexpected not in text
