"""Which pod states mean a revision cannot start, and how they are told."""

from __future__ import annotations

from typing import Any

import pytest

from model_operator.podhealth import pod_failures


def pod(name: str, state: dict[str, Any], last: dict[str, Any] | None = None, restarts: int = 0) -> dict[str, Any]:
    status = {"name": "runtime", "state": state, "lastState": last or {}, "restartCount": restarts}
    return {"metadata": {"name": name}, "status": {"containerStatuses": [status]}}


OOM = {"terminated": {"reason": "OOMKilled", "exitCode": 137}}


@pytest.mark.parametrize(
    ("pods", "expected"),
    [
        ([pod("p", {"running": {}})], ()),
        # Starting, or crashed once and running again: it may still come up.
        ([pod("p", {"waiting": {"reason": "ContainerCreating"}})], ()),
        ([pod("p", {"running": {}}, OOM, restarts=1)], ()),
        ([{"metadata": {"name": "p"}, "status": {}}], ()),
        (
            [pod("p", {"waiting": {"reason": "CrashLoopBackOff"}}, OOM, restarts=2)],
            ("pod p: runtime OOMKilled (exit 137), 2 restarts",),
        ),
        (
            [pod("p", {"waiting": {"reason": "CrashLoopBackOff"}}, {"terminated": {"exitCode": 1}}, restarts=3)],
            ("pod p: runtime exited (exit 1), 3 restarts",),
        ),
        (
            [pod("p", {"waiting": {"reason": "ErrImageNeverPull", "message": "image not present"}})],
            ("pod p: runtime ErrImageNeverPull: image not present",),
        ),
        (
            [
                pod("b", {"waiting": {"reason": "CreateContainerConfigError"}}),
                pod("a", {"waiting": {"reason": "ImagePullBackOff"}}),
            ],
            ("pod a: runtime ImagePullBackOff", "pod b: runtime CreateContainerConfigError"),
        ),
    ],
)
def test_pod_failures(pods: list[dict[str, Any]], expected: tuple[str, ...]) -> None:
    assert pod_failures(pods) == expected
