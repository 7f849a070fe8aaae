"""Which pod states mean a revision cannot start, how they are told, and when pods are listed to learn it."""

from __future__ import annotations

from typing import Any

import pytest

from model_operator.podhealth import PodChecks, pod_failures


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


# (seconds since the first look, revisions short of ready pods then, the failures a listing would find)
Look = tuple[float, set[str], tuple[str, ...]]


@pytest.mark.parametrize(
    ("looks", "listed", "failures_seen"),
    [
        # a new revision short of ready on every event of its start: listed only once it stayed short 10 s
        ([(0, {"a"}, ()), (1, {"a"}, ()), (4, {"a"}, ()), (9.9, {"a"}, ())], [], ()),
        ([(0, {"a"}, ()), (10, {"a"}, ("crash",)), (15, {"a"}, ()), (20, {"a"}, ())], [10, 20], ()),
        # what a listing found stands until the next one
        ([(0, {"a"}, ()), (10, {"a"}, ("crash",)), (12, {"a"}, ())], [10], ("crash",)),
        # ready again: nothing to find, and the clock starts over when it falls short again
        ([(0, {"a"}, ()), (10, {"a"}, ("crash",)), (11, set(), ()), (12, {"a"}, ()), (21, {"a"}, ())], [10], ()),
        ([(0, {"a"}, ()), (10, {"a"}, ("crash",)), (11, set(), ()), (12, {"a"}, ()), (22, {"a"}, ())], [10, 22], ()),
    ],
)
def test_pods_are_listed_once_a_revision_has_been_short_of_ready_for_a_period(
    looks: list[Look], listed: list[float], failures_seen: tuple[str, ...]
) -> None:
    checks = PodChecks(period=10.0)
    when_listed = []
    for at, short, found in looks:
        for revision in checks.due(short, at):
            checks.listed(revision, found, at)
            when_listed.append(at)
    assert when_listed == listed
    assert checks.failures("a") == failures_seen


def test_each_revision_is_paced_on_its_own() -> None:
    checks = PodChecks(period=10.0)
    assert checks.due({"a"}, 0) == []
    assert checks.due({"a", "b"}, 5) == []
    assert checks.due({"a", "b"}, 10) == ["a"]
    checks.listed("a", (), 10)
    assert checks.due({"a", "b"}, 15) == ["b"]
