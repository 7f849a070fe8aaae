"""The model Deployments as the watch shows them: what a Deployment says of its revision, how a listing
merges with events that raced it, that a reconcile loop reads its revisions from the view (listing
Deployments and revision records once, not on every reconcile), and how it applies what it wants: a
revision's objects at once, its routing after them."""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from model_operator.deployments import DeploymentView, ModelPods, model_pods
from model_operator.kube import ApplyError, Kube
from model_operator.naming import COMPONENT_MODEL, COMPONENT_ROUTER, LABEL_COMPONENT, LABEL_REVISION
from model_operator.reconciler import Operator
from model_operator.settings import OperatorSettings
from tests.test_api_validation import with_changes

OWNER = ("ns", "chat")


def deployment(
    name: str, revision: str | None = "r1", replicas: int | None = 2, ready: int | None = 2, component: str = "model"
) -> dict[str, Any]:
    labels = {LABEL_COMPONENT: component, **({LABEL_REVISION: revision} if revision else {})}
    body: dict[str, Any] = {"metadata": {"name": name, "labels": labels}, "spec": {}, "status": {}}
    if replicas is not None:
        body["spec"]["replicas"] = replicas
    if ready is not None:
        body["status"]["readyReplicas"] = ready
    return body


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (deployment("chat-r1"), ModelPods("r1", 2, 2)),
        (deployment("chat-r1", ready=None), ModelPods("r1", 2, 0)),  # no pod ready yet: the field is absent
        (deployment("chat-r1", replicas=None, ready=None), ModelPods("r1", 0, 0)),
        (deployment("chat-router", revision=None, component=COMPONENT_ROUTER), None),
        (deployment("chat-x", revision=None, component=COMPONENT_MODEL), None),
        ({"metadata": {"name": "bare"}}, None),
    ],
)
def test_what_a_deployment_says_of_its_revision(body: dict[str, Any], expected: ModelPods | None) -> None:
    assert model_pods(body) == expected


def test_events_keep_the_view_current() -> None:
    view = DeploymentView()
    view.record(OWNER, "ADDED", deployment("chat-r1", ready=0))
    view.record(OWNER, "MODIFIED", deployment("chat-r1", ready=2))
    view.record(OWNER, "ADDED", deployment("chat-r2", revision="r2", replicas=1, ready=0))
    view.record(OWNER, "ADDED", deployment("chat-router", revision=None, component=COMPONENT_ROUTER))
    view.record(("ns", "other"), "ADDED", deployment("other-r9", revision="r9"))
    assert view.revisions(OWNER) == {"r1": ModelPods("r1", 2, 2), "r2": ModelPods("r2", 1, 0)}
    view.record(OWNER, "DELETED", deployment("chat-r2", revision="r2"))
    assert set(view.revisions(OWNER)) == {"r1"}
    view.forget(OWNER)
    assert view.revisions(OWNER) == {}
    assert set(view.revisions(("ns", "other"))) == {"r9"}


def test_a_listing_fills_the_view_and_drops_what_it_no_longer_has() -> None:
    view = DeploymentView()
    view.record(OWNER, "ADDED", deployment("chat-gone", revision="old"))
    since = view.mark()
    view.merge(OWNER, {"chat-r1": deployment("chat-r1")}, since)
    assert view.revisions(OWNER) == {"r1": ModelPods("r1", 2, 2)}


def test_what_an_event_changed_during_the_listing_is_newer_than_the_listing() -> None:
    view = DeploymentView()
    view.record(OWNER, "ADDED", deployment("chat-r1", ready=1))
    since = view.mark()
    # while the listing is on its way: r1 gets ready, r2 is created, r3 is deleted
    view.record(OWNER, "MODIFIED", deployment("chat-r1", ready=2))
    view.record(OWNER, "ADDED", deployment("chat-r2", revision="r2"))
    view.record(OWNER, "DELETED", deployment("chat-r3", revision="r3"))
    listed = {"chat-r1": deployment("chat-r1", ready=1), "chat-r3": deployment("chat-r3", revision="r3")}
    view.merge(OWNER, listed, since)
    assert view.revisions(OWNER) == {"r1": ModelPods("r1", 2, 2), "r2": ModelPods("r2", 2, 2)}


class CountingKube(Kube):
    """The Kubernetes adapter's reads and writes, counted; nothing exists until the operator applies it."""

    def __init__(self, body: dict[str, Any]) -> None:  # no API client: every call is answered here
        self.body = body
        self.calls: Counter[str] = Counter()
        self.statuses: list[dict[str, Any]] = []

    def model_deployments(self, namespace: str, name: str) -> dict[str, dict[str, Any]]:
        self.calls["list deployments"] += 1
        return {}

    def pod_failures(self, namespace: str, name: str, revision: str) -> tuple[str, ...]:
        self.calls["list pods"] += 1
        return ()

    def revision_records(self, namespace: str, name: str) -> tuple[dict[str, dict[str, Any]], int]:
        self.calls["list records"] += 1
        return {}, 0

    def owned(self, namespace: str, name: str, owner_uid: str) -> list[tuple[str, str, str]]:
        self.calls["list owned"] += 1
        return []

    def apply(self, obj: dict[str, Any], namespace: str) -> int:
        self.calls[f"apply {obj['kind']}"] += 1
        return 1

    def write_status(self, namespace: str, name: str, status: dict[str, Any]) -> dict[str, Any]:
        self.statuses.append(status)
        version = str(int(self.body["metadata"]["resourceVersion"]) + 1)
        self.body = {**self.body, "metadata": {**self.body["metadata"], "resourceVersion": version}, "status": status}
        return self.body

    def post_event(self, *_: Any) -> None:
        self.calls["event"] += 1


async def _wait_for(condition: Callable[[], bool], seconds: float = 5.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.01)


def test_a_loop_reads_its_revisions_from_the_view_and_lists_only_once() -> None:
    body = {
        "apiVersion": "modelship.io/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"namespace": "ns", "name": "chat", "uid": "u1", "generation": 1, "resourceVersion": "1"},
        "spec": with_changes(runtime__replicas=2),
    }
    kube = CountingKube(body)

    async def scenario() -> None:
        operator = Operator(OperatorSettings(resync_seconds=0.02, pod_check_seconds=0.5), kube)
        operator.observe("ADDED", body)
        await _wait_for(lambda: len(kube.statuses) >= 1)
        revision = kube.statuses[-1]["stableRevision"]
        assert kube.statuses[-1]["phase"] == "Progressing"  # waiting for its pods
        # the watch shows the first revision's Deployment with its pods, then with them ready
        created = deployment(f"chat-{revision}", revision=revision, ready=0)
        operator.child_changed("ns", "chat", "ADDED", created)
        await asyncio.sleep(1.2)  # resyncs (at least 0.5 s apart) while pods start: none lists anything
        operator.child_changed("ns", "chat", "MODIFIED", deployment(f"chat-{revision}", revision=revision))
        await _wait_for(lambda: kube.statuses[-1]["phase"] == "Healthy")
        assert kube.statuses[-1]["stableReadyReplicas"] == 2
        await operator.stop()

    asyncio.run(scenario())
    assert kube.calls["list deployments"] == 1
    assert kube.calls["list records"] == 1
    assert kube.calls["apply ControllerRevision"] == 1
    assert kube.calls["list owned"] == 1  # the wanted children only grew: nothing to prune
    # while it was short of ready pods (1.2 s, listed 0.5 s after it fell short and every 0.5 s), and only then
    assert 1 <= kube.calls["list pods"] <= 3


A, B = ("apps/v1", "Deployment", "chat-a"), ("apps/v1", "Deployment", "chat-b")
RECORD = ("apps/v1", "ControllerRevision", "chat-a")


class OwningKube(CountingKube):
    """Owns A and B, and records what is deleted."""

    def __init__(self, body: dict[str, Any]) -> None:
        super().__init__(body)
        self.removed: list[tuple[str, str, str]] = []

    def owned(self, namespace: str, name: str, owner_uid: str) -> list[tuple[str, str, str]]:
        self.calls["list owned"] += 1
        return [A, B]

    def delete(self, namespace: str, api_version: str, kind: str, name: str) -> None:
        self.removed.append((api_version, kind, name))


@dataclass
class PruningLoop:
    pruned_for: tuple[frozenset[tuple[str, str, str]], float] | None
    key: str = "ns/chat"
    applied: dict[tuple[str, str, str], Any] = field(default_factory=dict)
    records: Any = None
    resync_seconds: float = 300.0


@pytest.mark.parametrize(
    ("last", "age", "wanted", "lists", "deleted"),
    [
        (None, 0, {A}, True, [B]),  # a loop's first prune: whatever a previous operator left
        ({A}, 0, {A}, False, []),
        ({A}, 0, {A, B}, False, []),  # a rollout starts: children are only added
        ({A}, 0, {A, RECORD}, False, []),  # a new revision record: records are kept by their own rule
        ({A, B}, 0, {A}, True, [B]),  # one is no longer wanted
        ({A}, 400, {A, B}, True, []),  # the resync lists whatever changed
    ],
)
def test_prune_lists_only_when_something_may_be_unwanted(
    last: set[tuple[str, str, str]] | None,
    age: float,
    wanted: set[tuple[str, str, str]],
    lists: bool,
    deleted: list[tuple[str, str, str]],
) -> None:
    kube = OwningKube({})
    operator = Operator(OperatorSettings(), kube)
    loop = PruningLoop(None if last is None else (frozenset(last), time.monotonic() - age))
    asyncio.run(operator._prune(loop, "ns", "chat", "u1", set(wanted), set(), []))  # type: ignore[arg-type]
    assert (kube.calls["list owned"] == 1) is lists
    assert kube.removed == deleted


class TimingKube(CountingKube):
    """Every apply takes a while; each one's start and end are recorded, and one kind can be made to fail."""

    def __init__(self, body: dict[str, Any], failing_kind: str | None = None) -> None:
        super().__init__(body)
        self.failing_kind = failing_kind
        self.spans: list[tuple[str, float, float]] = []
        self._lock = threading.Lock()

    def apply(self, obj: dict[str, Any], namespace: str) -> int:
        started = time.monotonic()
        time.sleep(0.1)
        with self._lock:
            self.spans.append((f"{obj['kind']}/{obj['metadata']['name']}", started, time.monotonic()))
        if obj["kind"] == self.failing_kind:
            raise ApplyError(f"cannot apply {obj['kind']} {obj['metadata']['name']}: 500 Internal Server Error")
        return 1


def _first_status(kube: TimingKube, body: dict[str, Any]) -> dict[str, Any]:
    async def scenario() -> None:
        operator = Operator(OperatorSettings(), kube)
        operator.observe("ADDED", body)
        await _wait_for(lambda: len(kube.statuses) >= 1)
        await operator.stop()

    asyncio.run(scenario())
    return kube.statuses[0]


ROUTER_MODE_BODY = {
    "apiVersion": "modelship.io/v1alpha1",
    "kind": "ModelDeployment",
    "metadata": {"namespace": "ns", "name": "chat", "uid": "u1", "generation": 1, "resourceVersion": "1"},
    "spec": with_changes(traffic__mode="router"),
}


def test_a_revisions_objects_are_applied_at_once_and_its_routing_after_them() -> None:
    kube = TimingKube(ROUTER_MODE_BODY)
    revision = _first_status(kube, ROUTER_MODE_BODY)["stableRevision"]
    backends = [s for s in kube.spans if s[0].endswith(f"/chat-{revision}")]
    routing = [s for s in kube.spans if s not in backends]
    assert sorted(s[0].split("/")[0] for s in backends) == ["ControllerRevision", "Deployment", "Service"]
    assert {s[0] for s in routing} >= {"ConfigMap/chat-routing", "Deployment/chat-router", "Service/chat"}
    # the record, the Deployment and the Service overlap: one round trip, not three in a row
    assert max(start for _, start, _ in backends) < min(end for _, _, end in backends)
    # and nothing routes to the revision before all three are applied
    assert min(start for _, start, _ in routing) >= max(end for _, _, end in backends)


def test_a_failed_backend_leaves_the_routing_unapplied_and_says_why() -> None:
    kube = TimingKube(ROUTER_MODE_BODY, failing_kind="Service")
    status = _first_status(kube, ROUTER_MODE_BODY)
    revision = status["stableRevision"]
    # the record and the Deployment still landed beside the failed Service; no routing was applied
    assert sorted(s[0] for s in kube.spans) == [
        f"{kind}/chat-{revision}" for kind in ("ControllerRevision", "Deployment", "Service")
    ]
    assert "cannot apply Service" in status["message"]
    failed = [c for c in status["conditions"] if c["reason"] == "ApplyFailed"]
    assert failed
    assert "cannot apply Service" in failed[0]["message"]
