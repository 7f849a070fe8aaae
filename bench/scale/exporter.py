"""SLI series for a fleet whose pods are kwok's and never run: one exporter that Prometheus scrapes, with
the runtime's metric names and labels (model_runtime.contract) for every stable and canary revision the
ModelDeployments' statuses name. Both tracks serve alike (the same rate, error share and latencies), so
every canary's analysis has real data to judge, and passes."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from http.server import ThreadingHTTPServer

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.exposition import MetricsHandler
from prometheus_client.registry import Collector

from model_runtime.contract import (
    CODE_LABEL,
    DEFAULT_LATENCY_BUCKETS,
    ENDPOINT_LABEL,
    IDENTITY_LABELS,
    MODEL_READY,
    REQUEST_DURATION,
    REQUESTS_TOTAL,
    SOURCE_LABEL,
    SOURCE_USER,
)

REQUESTS_PER_SECOND = 5.0
ERROR_SHARE = 0.002
TYPICAL_SECONDS = 0.8  # latencies spread evenly below twice this


class FleetSLIs(Collector):
    """Counters that grow with time since a revision was first named, so increase() over a window is the
    rate times the window, as a steadily loaded runtime's would be."""

    def __init__(self, namespace: str) -> None:
        self.namespace = namespace
        self._since: dict[tuple[str, str], float] = {}
        self._lock = threading.Lock()

    def serve(self, name: str, revisions: list[str]) -> None:
        with self._lock:
            for revision in revisions:
                self._since.setdefault((name, revision), time.time())

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily | HistogramMetricFamily]:
        with self._lock:
            serving = dict(self._since)
        now = time.time()
        ready = GaugeMetricFamily(MODEL_READY, "model loaded and serving", labels=list(IDENTITY_LABELS))
        labels = [*IDENTITY_LABELS, ENDPOINT_LABEL, SOURCE_LABEL, CODE_LABEL]
        requests = CounterMetricFamily(REQUESTS_TOTAL.removesuffix("_total"), "requests", labels=labels)
        durations = HistogramMetricFamily(
            REQUEST_DURATION, "request latency", labels=[*IDENTITY_LABELS, ENDPOINT_LABEL, SOURCE_LABEL]
        )
        for (name, revision), since in serving.items():
            identity = [self.namespace, name, revision]
            total = REQUESTS_PER_SECOND * (now - since)
            ready.add_metric(identity, 1.0)
            requests.add_metric([*identity, "completions", SOURCE_USER, "200"], total * (1 - ERROR_SHARE))
            requests.add_metric([*identity, "completions", SOURCE_USER, "500"], total * ERROR_SHARE)
            buckets = [
                (f"{bound:g}", total * min(1.0, bound / (2 * TYPICAL_SECONDS))) for bound in DEFAULT_LATENCY_BUCKETS
            ]
            durations.add_metric([*identity, "completions", SOURCE_USER], [*buckets, ("+Inf", total)], total)
        yield from (ready, requests, durations)


def start(collector: FleetSLIs, host: str, port: int) -> ThreadingHTTPServer:
    registry = CollectorRegistry()
    registry.register(collector)
    server = ThreadingHTTPServer((host, port), MetricsHandler.factory(registry))
    threading.Thread(target=server.serve_forever, daemon=True, name="fleet-slis").start()
    return server
