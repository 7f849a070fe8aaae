"""Traffic on a real control plane: the router's split follows the weight, a canary that answers
differently is rolled back on drift alone, the Gateway API mode writes weighted HTTPRoutes (to one
InferencePool per revision, each with a real endpoint picker, or to the revisions' Services), and the
replicas mode approximates the weight with pods."""

from __future__ import annotations

import time
from typing import Any

import pytest
import yaml

from e2e.cluster import images, tools
from e2e.cluster.controlplane import ControlPlane
from e2e.kube import Kubectl, wait_until
from e2e.modelship import BASE_SPEC, Deployed, merged
from e2e.scenarios import ended, healthy, new_revision

HOLD = "1h"
PICKER_ACCOUNT = "endpoint-picker"


def canary_share(deployed: Deployed, canary: str, count: int = 1000, rate: float = 60.0) -> float:
    with deployed.load(rate=rate) as load:
        wait_until(lambda: len(load.report.results) >= count, f"{count} answers", count / rate * 3 + 30)
    answers = load.report.results[:count]
    assert all(r.status == 200 for r in answers), load.report.describe()
    return sum(1 for r in answers if r.revision == canary) / count


def test_observed_share_follows_the_weight(deployed: Deployed) -> None:
    spec = merged(
        BASE_SPEC,
        {
            "traffic": {"mirrorPercent": 0},
            "rollout": {"steps": [{"weight": 10, "pause": HOLD}, {"weight": 50, "pause": HOLD}]},
        },
    )
    healthy(deployed, spec)
    new_revision(deployed)
    canary = deployed.wait(lambda s: s.get("canaryWeight") == 10, "canary at 10%", 90)["canaryRevision"]
    at_10 = canary_share(deployed, canary)
    # Shorten the first step: the rollout moves on to 50% (a rollout setting, so no new revision).
    deployed.patch({"rollout": {"steps": [{"weight": 10, "pause": "0s"}, {"weight": 50, "pause": HOLD}]}})
    deployed.wait(lambda s: s.get("canaryWeight") == 50, "canary at 50%", 90)
    at_50 = canary_share(deployed, canary)
    deployed.action("promote")
    deployed.wait(lambda s: s.get("stableRevision") == canary and not s.get("canaryRevision"), "promoted", 60)
    at_100 = canary_share(deployed, canary)
    print(
        f"\n[figure] observed canary share over 1000 requests: weight 10 -> {at_10:.1%}, "
        f"50 -> {at_50:.1%}, 100 -> {at_100:.1%}"
    )
    assert abs(at_10 - 0.10) <= 0.05
    assert abs(at_50 - 0.50) <= 0.05
    assert at_100 == 1.0


def test_corrupted_canary_is_rolled_back_on_drift_alone(deployed: Deployed) -> None:
    healthy(deployed)
    with deployed.load(rate=25) as load:
        time.sleep(2)
        new_revision(deployed, uri="pvc://models/tiny-permuted")
        entry = ended(deployed, "RolledBack", after=1)
    assert "diverge" in entry["reason"]
    metrics = {m["name"]: m for m in deployed.status["lastAnalysis"]["metrics"]}
    assert metrics["drift"]["verdict"] == "Fail"
    assert metrics["drift"]["canary"] > BASE_SPEC["rollout"]["analysis"]["thresholds"]["drift"]
    assert metrics["errorRate"]["verdict"] != "Fail"
    assert metrics["p99LatencySeconds"]["verdict"] != "Fail"
    # Stable's answers (the tiny random model's) are garbled and cut, the corrupted copy's clean and cut:
    # each kind counted on its own, that is no more truncation, nor any other content issue.
    assert metrics["contentIssues"]["verdict"] != "Fail"
    assert not load.report.failures, "the corrupted model answers fast and without errors: " + load.report.describe()


def test_identical_weights_under_a_new_revision_pass_drift(deployed: Deployed) -> None:
    healthy(deployed)
    drift_seen: list[float] = []
    with deployed.load(rate=25):
        time.sleep(2)
        new_revision(deployed)

        def drift_measured() -> bool:
            analysis = deployed.status.get("lastAnalysis") or {}
            drift = next((m for m in analysis.get("metrics", []) if m["name"] == "drift"), None)
            if drift and drift["verdict"] == "Pass":
                drift_seen.append(drift["canary"])
            return bool(drift_seen) or deployed.status.get("history", [{}])[-1].get("result") == "Promoted"

        wait_until(drift_measured, "drift judged", 120)
        ended(deployed, "Promoted", after=1)
    assert drift_seen, "the drift check ran and passed before promotion"
    assert max(drift_seen) < 0.01


@pytest.fixture(scope="session")
def gateway_api(kubectl: Kubectl) -> None:
    kubectl("apply", "--server-side", "-f", str(tools.gateway_api_crds()))
    kubectl.wait_established("httproutes.gateway.networking.k8s.io")


@pytest.fixture(scope="session")
def endpoint_picker(kubectl: Kubectl, control_plane: ControlPlane) -> str:
    """The Gateway API Inference Extension's InferencePool CRD installed, and its lightweight endpoint
    picker's image on the node."""
    kubectl("apply", "--server-side", "-f", str(tools.inference_extension_crds()))
    kubectl.wait_established("inferencepools.inference.networking.k8s.io")
    tag = images.build_endpoint_picker()
    control_plane.node.import_image(tag, lambda text: print(f"[cluster] {text}"))
    return tag


def picker_account(kubectl: Kubectl, namespace: str) -> None:
    """What a picker reads: its pool and the pods the pool selects."""
    rules = [
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]},
        {
            "apiGroups": ["inference.networking.k8s.io"],
            "resources": ["inferencepools"],
            "verbs": ["get", "list", "watch"],
        },
    ]
    objects = [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": PICKER_ACCOUNT}},
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": {"name": PICKER_ACCOUNT},
            "rules": rules,
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": PICKER_ACCOUNT},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": PICKER_ACCOUNT},
            "subjects": [{"kind": "ServiceAccount", "name": PICKER_ACCOUNT, "namespace": namespace}],
        },
    ]
    kubectl("apply", "-n", namespace, "-f", "-", stdin=yaml.safe_dump_all(objects))


def route_backends(kubectl: Kubectl, namespace: str) -> list[dict[str, Any]]:
    route = yaml.safe_load(kubectl("get", "httproute", "chat", "-n", namespace, "-o", "yaml").stdout)
    refs: list[dict[str, Any]] = route["spec"]["rules"][0]["backendRefs"]
    return refs


def backends(kubectl: Kubectl, namespace: str) -> list[tuple[str, int]]:
    return [(b["name"], b["weight"]) for b in route_backends(kubectl, namespace)]


def service_backends(kubectl: Kubectl, namespace: str) -> list[tuple[str, str, int | None, int]]:
    """(kind, name, port, weight) of each backend; the API server fills in the kind Service left out."""
    return [
        (b.get("kind", "Service"), b["name"], b.get("port"), b["weight"]) for b in route_backends(kubectl, namespace)
    ]


def pools(kubectl: Kubectl, namespace: str) -> dict[str, dict[str, Any]]:
    listed = yaml.safe_load(kubectl("get", "inferencepools", "-n", namespace, "-o", "yaml").stdout)
    return {pool["metadata"]["name"]: pool for pool in listed["items"]}


def picker_ready(kubectl: Kubectl, namespace: str, revision: str) -> None:
    """The revision's picker reports serving only once it has synced its pool: the pool is one a real GIE
    picker reads, and the account the spec names lets it."""
    name = f"chat-{revision}-epp"

    def ready() -> bool:
        out = kubectl("get", "deployment", name, "-n", namespace, "-o", "jsonpath={.status.readyReplicas}", check=False)
        return out.stdout.strip() == "1"

    def why() -> str:
        return kubectl(
            "describe", "pods", "-n", namespace, "-l", f"modelship.io/revision={revision}", check=False
        ).stdout

    wait_until(ready, f"endpoint picker {name} ready", 120, explain=why)


@pytest.mark.usefixtures("gateway_api")
def test_gateway_api_mode_weights_inference_pools_then_services(
    deployed: Deployed, kubectl: Kubectl, endpoint_picker: str
) -> None:
    """One rollout with an InferencePool (and a real endpoint picker) per revision, the HTTPRoute's weights
    moving between the pools; then the same ModelDeployment back on plain per-revision Services."""
    picker_account(kubectl, deployed.namespace)
    picker = {"image": endpoint_picker, "serviceAccountName": PICKER_ACCOUNT}
    gateway = {
        "parentRefs": [{"name": "inference"}],
        "hostnames": ["chat"],
        "inferencePool": {"endpointPicker": picker},
    }
    spec = merged(BASE_SPEC, {"traffic": {"mode": "gatewayAPI", "mirrorPercent": 0, "gateway": gateway}})
    stable = healthy(deployed, spec)
    assert backends(kubectl, deployed.namespace) == [(f"chat-{stable}", 100)]
    assert {(b["group"], b["kind"]) for b in route_backends(kubectl, deployed.namespace)} == {
        ("inference.networking.k8s.io", "InferencePool")
    }
    route = yaml.safe_load(kubectl("get", "httproute", "chat", "-n", deployed.namespace, "-o", "yaml").stdout)
    assert route["spec"]["parentRefs"][0]["name"] == "inference"
    pool = pools(kubectl, deployed.namespace)[f"chat-{stable}"]
    selected = deployed.core.list_namespaced_pod(
        deployed.namespace,
        label_selector=",".join(f"{k}={v}" for k, v in pool["spec"]["selector"]["matchLabels"].items()),
    ).items
    assert selected
    assert {p.metadata.labels["modelship.io/revision"] for p in selected} == {stable}
    picker_ready(kubectl, deployed.namespace, stable)
    # No Gateway controller runs here, so load goes straight to the model pods of both revisions.
    with deployed.load(rate=25, component="model"):
        time.sleep(2)
        new_revision(deployed)
        canary = deployed.wait(lambda s: s.get("canaryWeight") == 20, "canary at 20%", 90)["canaryRevision"]
        assert backends(kubectl, deployed.namespace) == [(f"chat-{stable}", 80), (f"chat-{canary}", 20)]
        assert {f"chat-{stable}", f"chat-{canary}"} <= set(pools(kubectl, deployed.namespace))
        picker_ready(kubectl, deployed.namespace, canary)
        deployed.wait(lambda s: s.get("canaryWeight") == 50, "canary at 50%", 90)
        assert backends(kubectl, deployed.namespace) == [(f"chat-{stable}", 50), (f"chat-{canary}", 50)]
        ended(deployed, "Promoted", after=1)
    wait_until(
        lambda: backends(kubectl, deployed.namespace) == [(f"chat-{canary}", 100)], "route to the new stable", 30
    )
    assert kubectl("get", "deployment", "chat-router", "-n", deployed.namespace, check=False).returncode != 0

    # Without pools: the same revision behind its Service, and the pools and pickers pruned.
    deployed.patch({"traffic": {"gateway": {"inferencePool": None}}})
    wait_until(
        lambda: service_backends(kubectl, deployed.namespace) == [("Service", f"chat-{canary}", 80, 100)],
        "route to the stable Service",
        60,
        explain=lambda: yaml.safe_dump(route_backends(kubectl, deployed.namespace)),
    )
    wait_until(lambda: not pools(kubectl, deployed.namespace), "pools pruned", 60)
    wait_until(
        lambda: not kubectl("get", "deployment", f"chat-{canary}-epp", "-n", deployed.namespace, check=False).stdout,
        "picker pruned",
        60,
    )


def test_replicas_mode_rolls_out_with_pods(deployed: Deployed, kubectl: Kubectl) -> None:
    spec = merged(BASE_SPEC, {"runtime": {"replicas": 2}, "traffic": {"mode": "replicas", "mirrorPercent": 0}})
    stable = healthy(deployed, spec)
    assert kubectl("get", "service", "chat", "-n", deployed.namespace, "-o", "jsonpath={.spec.selector}").stdout
    counts: list[dict[str, Any]] = []
    with deployed.load(rate=25, component="model") as load:
        time.sleep(2)
        new_revision(deployed)

        def observe() -> bool:
            pods: dict[str, int] = {}
            for pod in deployed.pods():
                revision = pod.metadata.labels["modelship.io/revision"]
                pods[revision] = pods.get(revision, 0) + 1
            counts.append(pods)
            return bool(deployed.status.get("history", [{}])[-1].get("result") == "Promoted")

        wait_until(
            observe,
            "promotion",
            180,
        )
    assert any(c.get(stable) == 2 and c.get(next(iter(set(c) - {stable}), ""), 0) >= 1 for c in counts if len(c) > 1)
    revisions = load.report.revisions()
    assert len(revisions) == 2
