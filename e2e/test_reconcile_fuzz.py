"""No spec makes the operator spin: fuzzed ModelDeployments (the API server accepted them; some break the
operator-only rules, or make pods the API server refuses) cost the running operator no more per object
than a normal one does.

The pods of these ModelDeployments select a node that does not exist, so nothing runs and the canaries
never become Ready: what is measured is the reconcile loop alone, rollouts in flight included."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
import yaml
from hypothesis import given
from kubernetes import client

from e2e.cluster.controlplane import ControlPlane
from e2e.cluster.node import Node
from e2e.kube import Kubectl, wait_until
from e2e.operator_cost import Cost, measure
from e2e.spec_fuzz import api_server_verdict, fuzz_settings, mutated_specs, operator_problems

WINDOW_SECONDS = 20
FUZZED = 8
NOWHERE = {"modelship.io/fuzz": "no-such-node"}
NORMAL: dict[str, Any] = {"model": {"uri": "pvc://models/tiny"}}
# The fastest pace the API allows, and the two operator-only rules: the specs most likely to cost.
EXTREMES: list[dict[str, Any]] = [
    {
        "model": {"uri": "pvc://models/tiny"},
        "rollout": {
            "steps": [{"weight": 1, "pause": "0s"}, {"weight": 99, "pause": "0s"}],
            "analysis": {"interval": "1s", "noDataTimeout": "1s", "minRequests": 1, "onNoData": "rollback"},
            "progressDeadlineSeconds": 1,
            "abortScaleDownDelaySeconds": 0,
        },
    },
    {"model": {"uri": "pvc://models/tiny"}, "rollout": {"analysis": {"interval": "1s"}}, "paused": True},
    {"model": {"uri": "pvc://models/tiny"}, "runtime": {"env": [{"name": "MODELSHIP_MODEL_PATH", "value": "/x"}]}},
    {"model": {"uri": "pvc://models/tiny"}, "rollout": {"analysis": {"interval": "1m", "noDataTimeout": "2s"}}},
    # Accepted here, but its Deployment is refused (an env source naming no valid Secret): the operator
    # retries the apply and records ApplyFailed; it once rewrote the status ten times a second doing so.
    {
        "model": {"uri": "pvc://models/tiny"},
        "runtime": {"env": [{"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "Not A Name", "key": "k"}}}]},
    },
]


def contained(spec: dict[str, Any]) -> dict[str, Any]:
    """The spec with its pods pinned to no node and no router, so only the operator does work."""
    spec = copy.deepcopy(spec)
    if not isinstance(spec.get("runtime"), dict):  # a mutation may have put something else there
        spec["runtime"] = {}
    runtime = spec["runtime"]
    runtime["nodeSelector"] = NOWHERE
    runtime["replicas"] = 1
    spec["traffic"] = {"mode": "replicas"}
    return spec


def fuzzed_specs(kubectl: Kubectl, namespace: str) -> list[dict[str, Any]]:
    """Mutated example specs the API server accepts, as it stores them."""
    found: list[dict[str, Any]] = []

    @fuzz_settings(150)
    @given(mutated_specs())
    def collect(spec: dict[str, Any]) -> None:
        if len(found) < FUZZED:
            verdict = api_server_verdict(kubectl, namespace, contained(spec))
            if verdict.accepted and verdict.stored is not None:
                found.append(verdict.stored)

    collect()
    assert len(found) == FUZZED, f"only {len(found)} accepted specs in 150 mutations"
    return found


def apply_all(kubectl: Kubectl, namespace: str, specs: list[dict[str, Any]]) -> list[str]:
    names = [f"fuzz-{index}" for index in range(len(specs))]
    documents = [
        {"apiVersion": "modelship.io/v1alpha1", "kind": "ModelDeployment", "metadata": {"name": n}, "spec": s}
        for n, s in zip(names, specs, strict=True)
    ]
    kubectl.apply(yaml.safe_dump_all(documents), namespace)
    return names


def start_canaries(kubectl: Kubectl, namespace: str, names: list[str]) -> None:
    """A spec change that makes a new revision, so each ModelDeployment has a rollout in flight."""
    change = {"spec": {"runtime": {"image": "modelship/runtime:fuzz-canary"}}}
    for name in names:
        kubectl("patch", "mdep", name, "-n", namespace, "--type=merge", "-p", json.dumps(change))


def observed(custom: client.CustomObjectsApi, namespace: str, names: list[str]) -> bool:
    for name in names:
        body: Any = custom.get_namespaced_custom_object("modelship.io", "v1alpha1", namespace, "modeldeployments", name)
        status = body.get("status") or {}
        if status.get("observedGeneration") != body["metadata"]["generation"]:
            return False
    return True


def settle_and_measure(
    kubectl: Kubectl,
    core: client.CoreV1Api,
    custom: client.CustomObjectsApi,
    node: Node,
    namespace: str,
    specs: list[dict[str, Any]],
) -> tuple[list[str], Cost]:
    names = apply_all(kubectl, namespace, [contained(s) for s in specs])
    wait_until(lambda: observed(custom, namespace, names), f"the operator to observe {names}", 60)
    start_canaries(kubectl, namespace, names)
    wait_until(lambda: observed(custom, namespace, names), f"the operator to observe the canaries of {names}", 60)
    return names, measure(core, custom, kubectl, node, namespace, WINDOW_SECONDS)


@pytest.fixture
def second_namespace(core: client.CoreV1Api, namespace: str) -> Any:
    name = f"{namespace}-fuzz"
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    yield name
    core.delete_namespace(name)


@pytest.mark.usefixtures("operator")
def test_no_spec_costs_more_than_a_normal_one(
    kubectl: Kubectl,
    core: client.CoreV1Api,
    custom: client.CustomObjectsApi,
    control_plane: ControlPlane,
    namespace: str,
    second_namespace: str,
) -> None:
    node = control_plane.node
    _, normal = settle_and_measure(kubectl, core, custom, node, namespace, [NORMAL])
    specs = [*EXTREMES, *fuzzed_specs(kubectl, second_namespace)]
    assert sum(bool(operator_problems(s)) for s in specs) >= 2  # the operator-only rules are in the batch
    names, fuzzed = settle_and_measure(kubectl, core, custom, node, second_namespace, specs)
    print("\n" + normal.line("normal", 1) + "\n" + fuzzed.line("fuzzed", len(names)))

    # A reconcile loop that spins writes its object over and over; the operator writes an object at most
    # once per look, and a look is at least a second apart (analysis interval >= 1s, requeue floor).
    for name in names:
        spec = json.dumps(specs[names.index(name)])
        assert fuzzed.writes_per_second(name) <= 1.0, f"{name} written {fuzzed.writes} in {fuzzed.seconds:.0f}s: {spec}"
    # Per object, the batch costs no more than the normal one did, within the noise of a 20 s window
    # (a tick of CPU, a handful of requests).
    slack_cpu, slack_requests = 0.02, 0.5
    assert fuzzed.cpu_share / len(names) <= normal.cpu_share + slack_cpu, (normal, fuzzed)
    assert fuzzed.requests_per_second / len(names) <= normal.requests_per_second + slack_requests, (normal, fuzzed)
