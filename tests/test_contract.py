"""The operator-runtime contract (model_runtime/contract.py) seen from both sides: what the operator
writes and queries is what the router reads and the runtime exports."""

from __future__ import annotations

import json
from typing import Any

import pytest

from model_operator import manifests, promql
from model_operator.api import parse_spec
from model_runtime.contract import (
    MIRROR_HEADER,
    SOURCE_MIRROR,
    SOURCE_USER,
    VALIDATION_HEADER,
    RoutingConfig,
    model_pods_label_selector,
)
from model_runtime.metrics import RuntimeMetrics
from model_runtime.router.config import parse_routing
from model_runtime.router.discovery import ready_endpoints
from model_runtime.router.http import Request
from model_runtime.router.metrics import RouterMetrics
from tests.metrics_helpers import exported_series, matches, selectors

SPEC = parse_spec({"model": {"uri": "pvc://models/tiny"}, "traffic": {"mirrorPercent": 7, "stickyHeader": "x-user"}})


@pytest.mark.parametrize(("canary", "weight"), [(None, 0), ("c1", 10), ("c1", 50)])
def test_the_routing_config_the_operator_writes_is_the_one_the_router_reads(canary: str | None, weight: int) -> None:
    written = manifests.routing_config(SPEC, "s1", canary, weight)
    read = parse_routing(json.dumps(written))
    assert read == RoutingConfig.for_rollout("s1", canary, weight, 7, "x-user", "text-generation")
    assert read.canary_weight == weight
    assert read.mirror_percent == (7 if canary else 0)


def test_the_router_finds_the_endpoints_of_the_services_the_operator_makes() -> None:
    """The EndpointSlice controller copies a Service's labels onto its slices; the router selects them."""
    service = manifests.revision_service("chat", "c1")
    endpoint_slice = {
        "metadata": {"labels": {**service["metadata"]["labels"], "kubernetes.io/service-name": "chat-c1"}},
        "addressType": "IPv4",
        "ports": [{"name": service["spec"]["ports"][0]["name"], "port": 8080, "protocol": "TCP"}],
        "endpoints": [{"addresses": ["10.0.0.7"], "conditions": {"ready": True}}],
    }
    selector = dict(term.split("=") for term in model_pods_label_selector("chat").split(","))
    assert selector.items() <= endpoint_slice["metadata"]["labels"].items()
    ready, known = ready_endpoints([endpoint_slice], 9999)
    assert ready == {"c1": ["10.0.0.7:8080"]}
    assert known == {"c1"}


def test_every_series_the_analysis_queries_is_exported_with_those_labels() -> None:
    runtime = RuntimeMetrics("ns", "chat", "c1")
    runtime.ready(True)
    runtime.request("completions", 200, 0.4)
    runtime.request("chat_completions", 503, 0.1)
    router = RouterMetrics("ns", "chat")
    router.divergence.labels("ns", "chat", "c1").observe(0.02)
    exported = exported_series(runtime.render().decode()) | exported_series(router.render().decode())
    queries = [
        promql.scraped("ns", "chat", ["s1", "c1"]),
        promql.requests("ns", "chat", ["s1", "c1"], 30),
        promql.errors("ns", "chat", ["s1", "c1"], 30),
        promql.latency_buckets("ns", "chat", ["s1", "c1"], 30),
        promql.divergence_buckets("ns", "chat", "c1", 30),
        promql.divergence_sum("ns", "chat", "c1", 30),
    ]
    for query in queries:
        for metric, matchers in selectors(query):
            assert metric in exported, f"{metric} (queried by {query}) is not exported"
            assert any(matches(labels, matchers) for labels in exported[metric]), (metric, matchers)


def test_the_router_source_queries_what_the_router_exports_per_revision_and_endpoint() -> None:
    """A revision another server runs is measured from the router: its queries select the router's series
    of requests to the answering endpoints, and nothing else the router counts."""
    router = RouterMetrics("ns", "chat")
    router.request("stable", "s1", "/v1/chat/completions", 200, 0.4)
    router.request("canary", "c1", "/v1/completions", 502, 0.1)
    router.request("canary", "c1", "/v1/models", 500, 0.01)
    router.request("canary", "c1", "/anything/else", 500, 0.01)
    router.weight.labels("ns", "chat", "stable", "s1").set(90)
    router.weight.labels("ns", "chat", "canary", "c1").set(10)
    exported = exported_series(router.render().decode())
    endpoints = {labels["endpoint"] for labels in exported["modelship_router_requests_total"]}
    assert endpoints == {"chat_completions", "completions", "models", "other"}  # paths are not labels
    queries = [
        promql.scraped("ns", "chat", ["s1", "c1"], promql.ROUTER),
        promql.requests("ns", "chat", ["s1", "c1"], 30, promql.ROUTER),
        promql.errors("ns", "chat", ["s1", "c1"], 30, promql.ROUTER),
        promql.latency_buckets("ns", "chat", ["s1", "c1"], 30, promql.ROUTER),
    ]
    for query in queries:
        for metric, matchers in selectors(query):
            assert metric.startswith("modelship_router_"), query
            assert any(matches(labels, matchers) for labels in exported[metric]), (metric, matchers)
    (_, matchers), *_ = selectors(promql.errors("ns", "chat", ["c1"], 30, promql.ROUTER))
    failed = [labels for labels in exported["modelship_router_requests_total"] if matches(labels, matchers)]
    assert [labels["endpoint"] for labels in failed] == ["completions"]  # not /v1/models, not other paths


def test_a_runtime_without_an_identity_exports_no_empty_identity_labels() -> None:
    """Run as a `custom` server, the runtime is told nothing of ModelShip; an exposed `revision=""` would win
    over the revision Prometheus gives the pod's series (honor_labels), so it is not exposed at all."""
    runtime = RuntimeMetrics("", "", "")
    runtime.ready(True)
    runtime.request("completions", 200, 0.4)
    runtime.tokens(3, 5)
    exported = exported_series(runtime.render().decode())
    assert exported["modelship_requests_total"] == [{"endpoint": "completions", "code": "200", "source": "user"}]
    assert exported["modelship_model_ready"] == [{}]
    assert all(
        not {"namespace", "model_deployment", "revision"} & set(labels) for s in exported.values() for labels in s
    )
    partly = RuntimeMetrics("ns", "chat", "")
    partly.ready(True)
    assert exported_series(partly.render().decode())["modelship_model_ready"] == [
        {"namespace": "ns", "model_deployment": "chat"}
    ]


def test_the_analysis_counts_user_traffic_only() -> None:
    runtime = RuntimeMetrics("ns", "chat", "c1")
    runtime.request("completions", 500, 0.4, source=SOURCE_MIRROR)
    series = exported_series(runtime.render().decode())["modelship_requests_total"]
    (_, matchers), *_ = selectors(promql.errors("ns", "chat", ["c1"], 30))
    assert matchers["source"] == SOURCE_USER
    assert not any(matches(labels, matchers) for labels in series)


def test_clients_cannot_pass_their_requests_off_as_mirror_probes_or_golden_prompts() -> None:
    headers: list[tuple[bytes, bytes]] = [
        (MIRROR_HEADER.encode(), b"1"),
        (b"x-user", b"a"),
        (VALIDATION_HEADER.upper().encode(), b"1"),
    ]
    forwarded: Any = Request("POST", "/v1/completions", headers).forward_headers()
    assert forwarded == [(b"x-user", b"a")]
