"""The router's Prometheus metrics, labelled by track and revision (DESIGN.md section 5)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from model_runtime.contract import (
    DEFAULT_LATENCY_BUCKETS,
    DIVERGENCE_BUCKETS,
    ENDPOINT_LABEL,
    ENDPOINT_OF_PATH,
    OTHER_ENDPOINT,
    OUTPUT_DIVERGENCE,
    ROUTER_REQUEST_DURATION,
    ROUTER_REQUESTS_TOTAL,
    ROUTER_WEIGHT,
)

IDENTITY = ("namespace", "model_deployment")


class RouterMetrics:
    def __init__(
        self, namespace: str, model_deployment: str, latency_buckets: tuple[float, ...] = DEFAULT_LATENCY_BUCKETS
    ) -> None:
        self.registry = r = CollectorRegistry()
        self.identity = (namespace, model_deployment)
        self.requests = Counter(
            ROUTER_REQUESTS_TOTAL,
            "Requests routed, by track, revision, endpoint and code.",
            [*IDENTITY, "track", "revision", ENDPOINT_LABEL, "code"],
            registry=r,
        )
        self.duration = Histogram(
            ROUTER_REQUEST_DURATION,
            "Latency seen by clients, by track, revision, endpoint and code.",
            [*IDENTITY, "track", "revision", ENDPOINT_LABEL, "code"],
            buckets=latency_buckets,
            registry=r,
        )
        self.divergence = Histogram(
            OUTPUT_DIVERGENCE,
            "Mean JS divergence of canary vs stable next-token distributions per mirrored request (0..1).",
            [*IDENTITY, "revision"],
            buckets=DIVERGENCE_BUCKETS,
            registry=r,
        )
        self.mirror_dropped = Counter(
            "modelship_router_mirror_dropped_total",
            "Mirrored requests dropped because the mirror queue was full.",
            IDENTITY,
            registry=r,
        )
        self.mirror_errors = Counter(
            "modelship_router_mirror_errors_total",
            "Mirrored comparisons that failed (an upstream error or no logprobs).",
            IDENTITY,
            registry=r,
        )
        self.retries = Counter(
            "modelship_router_upstream_retries_total",
            "Requests sent to another pod after one refused or was draining.",
            IDENTITY,
            registry=r,
        )
        self.config_errors = Counter(
            "modelship_router_config_errors_total",
            "Routing configs refused (the last good one stays in force).",
            IDENTITY,
            registry=r,
        )
        self.config_valid = Gauge(
            "modelship_router_config_valid",
            "1 when the latest routing config is the one in force.",
            IDENTITY,
            registry=r,
        )
        self.weight = Gauge(
            ROUTER_WEIGHT,
            "Percent of requests each track receives.",
            [*IDENTITY, "track", "revision"],
            registry=r,
        )
        self.endpoints = Gauge(
            "modelship_router_endpoints", "Ready pods per revision.", [*IDENTITY, "revision"], registry=r
        )
        self._children: dict[tuple[str, str, str, int], tuple[Counter, Histogram]] = {}

    def request(self, track: str, revision: str, path: str, code: int, seconds: float) -> None:
        endpoint = ENDPOINT_OF_PATH.get(path, OTHER_ENDPOINT)  # bounded: a client's paths are not labels
        key = (track, revision, endpoint, code)
        children = self._children.get(key)
        if children is None:  # labels() is slow on the hot path: resolve each combination once
            labels = (*self.identity, track, revision, endpoint, str(code))
            children = (self.requests.labels(*labels), self.duration.labels(*labels))
            self._children[key] = children
        children[0].inc()
        children[1].observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)
