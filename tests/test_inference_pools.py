"""gatewayAPI mode with InferencePools: one pool (and picker) per revision beside its Deployment and Service,
the HTTPRoute's weights on the pools, and the model-server metrics the picker reads."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from model_operator.api import InvalidSpecError, parse_spec
from model_operator.api.status import ModelDeploymentStatus
from model_operator.children import desired_children
from model_operator.naming import LABEL_REVISION, RUNTIME_PORT, revision_selector
from model_operator.revision import revision_inputs
from model_operator.rollout import Decision
from model_operator.settings import OperatorSettings
from model_runtime.contract import POOL_METRICS, REQUESTS_WAITING, SEQUENCES_RUNNING
from tests.metrics_helpers import sample
from tests.runtime_helpers import running_app
from tests.test_api_validation import with_changes

SETTINGS = OperatorSettings(runtime_image="modelship/runtime:test")
PICKER = {"image": "example/epp:1", "args": ["--v=2"], "serviceAccountName": "epp", "failureMode": "FailOpen"}


def gateway(**pool: Any) -> dict[str, Any]:
    return {"mode": "gatewayAPI", "gateway": {"parentRefs": [{"name": "inference"}], "inferencePool": pool}}


def children(traffic: dict[str, Any], stable: str, canary: str | None, weight: int) -> list[dict[str, Any]]:
    spec = parse_spec(with_changes(traffic=traffic))
    plan = {stable: 1} | ({canary: 1} if canary else {})
    decision = Decision(ModelDeploymentStatus(), plan, stable, canary, weight, (), False, None, 5.0)
    records = {revision: revision_inputs(spec, SETTINGS.runtime_image) for revision in plan}
    return desired_children("chat", "models", spec, canary or stable, records, decision, SETTINGS).objects


def of_kind(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == kind]


@pytest.mark.parametrize(
    ("canary", "weight", "expected"),
    [
        (None, 0, [("chat-s1", 100)]),
        ("c2", 10, [("chat-s1", 90), ("chat-c2", 10)]),
        ("c2", 50, [("chat-s1", 50), ("chat-c2", 50)]),
        ("c2", 0, [("chat-s1", 100), ("chat-c2", 0)]),  # rolled back: the canary's pool is kept at weight 0
    ],
)
def test_the_route_weights_the_revisions_pools(canary: str | None, weight: int, expected: list[Any]) -> None:
    objects = children(gateway(), "s1", canary, weight)
    (route,) = of_kind(objects, "HTTPRoute")
    refs = route["spec"]["rules"][0]["backendRefs"]
    assert [(r["name"], r["weight"]) for r in refs] == expected
    assert {(r["group"], r["kind"]) for r in refs} == {("inference.networking.k8s.io", "InferencePool")}
    assert all("port" not in r for r in refs)  # a pool's port is its targetPorts
    pools = {p["metadata"]["name"]: p for p in of_kind(objects, "InferencePool")}
    assert sorted(pools) == sorted(name for name, _ in expected)
    for revision in ["s1", *([canary] if canary else [])]:
        pool = pools[f"chat-{revision}"]
        assert pool["apiVersion"] == "inference.networking.k8s.io/v1"
        assert pool["spec"]["selector"]["matchLabels"] == revision_selector("chat", revision)
        assert pool["spec"]["targetPorts"] == [{"number": RUNTIME_PORT}]
        assert "endpointPickerRef" not in pool["spec"]  # no picker configured


def test_without_pools_the_route_names_the_revisions_services() -> None:
    traffic = {"mode": "gatewayAPI", "gateway": {"parentRefs": [{"name": "inference"}]}}
    objects = children(traffic, "s1", "c2", 20)
    refs = of_kind(objects, "HTTPRoute")[0]["spec"]["rules"][0]["backendRefs"]
    assert refs == [{"name": "chat-s1", "port": 80, "weight": 80}, {"name": "chat-c2", "port": 80, "weight": 20}]
    assert not of_kind(objects, "InferencePool")


def test_each_pool_has_its_own_picker() -> None:
    objects = children(gateway(endpointPicker=PICKER), "s1", "c2", 20)
    pools = {p["metadata"]["name"]: p for p in of_kind(objects, "InferencePool")}
    deployments = {d["metadata"]["name"]: d for d in of_kind(objects, "Deployment")}
    services = {s["metadata"]["name"]: s for s in of_kind(objects, "Service")}
    for revision in ("s1", "c2"):
        ref = pools[f"chat-{revision}"]["spec"]["endpointPickerRef"]
        assert ref == {"name": f"chat-{revision}-epp", "port": {"number": 9002}, "failureMode": "FailOpen"}
        picker = deployments[f"chat-{revision}-epp"]
        template = picker["spec"]["template"]
        (container,) = template["spec"]["containers"]
        assert container["image"] == "example/epp:1"
        assert container["args"] == [
            f"--pool-name=chat-{revision}",
            "--pool-namespace=$(POD_NAMESPACE)",
            "--pool-group=inference.networking.k8s.io",
            "--grpc-port=9002",
            "--grpc-health-port=9003",
            "--v=2",
        ]
        assert template["spec"]["serviceAccountName"] == "epp"
        assert template["spec"]["securityContext"]["runAsNonRoot"] is True
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        assert container["readinessProbe"]["grpc"] == {"port": 9003, "service": "inference-extension"}
        selector = picker["spec"]["selector"]["matchLabels"]
        assert selector[LABEL_REVISION] == revision
        assert selector.items() <= template["metadata"]["labels"].items()
        service = services[f"chat-{revision}-epp"]
        assert service["spec"]["selector"] == selector
        assert service["spec"]["ports"][0]["port"] == 9002
    # The picker's pods are not model pods: the revision's Service and pool do not select them.
    model_selector = pools["chat-s1"]["spec"]["selector"]["matchLabels"]
    assert not model_selector.items() <= deployments["chat-s1-epp"]["spec"]["template"]["metadata"]["labels"].items()


@pytest.mark.parametrize(
    ("picker", "message"),
    [
        ({}, "image"),
        ({"image": "has space"}, "image"),
        ({"image": "x", "failureMode": "Sometimes"}, "failureMode"),
        ({"image": "x", "serviceAccountName": "Not_A_Name"}, "serviceAccountName"),
    ],
)
def test_a_bad_picker_is_refused(picker: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidSpecError, match=message):
        parse_spec(with_changes(traffic=gateway(endpointPicker=picker)))


def test_the_pool_metrics_are_the_runtimes_names() -> None:
    assert set(POOL_METRICS) == {"TotalQueuedRequests", "TotalRunningRequests", "KVCacheUtilization"}
    assert POOL_METRICS["TotalQueuedRequests"] == REQUESTS_WAITING
    assert POOL_METRICS["TotalRunningRequests"] == SEQUENCES_RUNNING


PROMPT = "the quick brown fox jumps over the lazy dog " * 4


async def test_waiting_and_running_have_vllms_meaning(tiny_loaded: Any) -> None:
    """With room in the KV budget for about two sequences, six streams: two run, the rest wait; every
    request is one or the other while in flight, and both gauges are back to zero once all are answered."""
    body = {"model": "model", "prompt": PROMPT, "max_tokens": 48, "temperature": 0, "stream": True}
    async with running_app(tiny_loaded, kv_cache_tokens=200) as (client, _):

        async def answered() -> bytes:
            return await (await client.post("/v1/completions", json=body)).read()

        streams = asyncio.gather(*(answered() for _ in range(6)))
        seen: list[tuple[float, float]] = []
        for _ in range(500):  # bounded; the engine updates the running count once per cycle
            text = await (await client.get("/metrics")).text()
            waiting, running = sample(text, REQUESTS_WAITING), sample(text, SEQUENCES_RUNNING)
            assert waiting is not None
            assert running is not None
            seen.append((waiting, running))
            if streams.done():
                break
            await asyncio.sleep(0.01)
        await streams
        after = await (await client.get("/metrics")).text()
    assert any(running >= 1 and waiting >= 1 for waiting, running in seen), seen
    assert all(running <= 2 for _, running in seen), seen  # the budget holds two worst cases at most
    assert all(waiting + running <= 6 for waiting, running in seen), seen
    assert sample(after, REQUESTS_WAITING) == 0
    assert sample(after, SEQUENCES_RUNNING) == 0
