"""The Prometheus adapter: run the analysis queries (prometheus-api-client, with a timeout) and turn the
answers into a Measurement. It decides nothing; a failed query becomes `query_error`."""

from __future__ import annotations

import math
from typing import Any

import requests
from prometheus_api_client import PrometheusConnect
from prometheus_api_client.exceptions import PrometheusApiClientException

from . import promql
from .analysis import DriftSample, Measurement, TrackSample


def _by_revision(result: list[dict[str, Any]]) -> dict[str, float]:
    values: dict[str, float] = {}
    for series in result:
        revision = series.get("metric", {}).get("revision")
        try:
            value = float(series["value"][1])
        except (KeyError, IndexError, TypeError, ValueError):
            continue
        if revision is not None:
            values[revision] = value
    return values


def _buckets(result: list[dict[str, Any]]) -> dict[str, tuple[tuple[float, float], ...]]:
    found: dict[str, list[tuple[float, float]]] = {}
    for series in result:
        labels = series.get("metric", {})
        try:
            bound, count = float(labels["le"]), float(series["value"][1])
        except (KeyError, IndexError, TypeError, ValueError):
            continue
        found.setdefault(labels.get("revision", ""), []).append((bound, count))
    return {revision: tuple(sorted(pairs)) for revision, pairs in found.items()}


def _scalar(result: list[dict[str, Any]]) -> float | None:
    for series in result:
        try:
            value = float(series["value"][1])
        except (KeyError, IndexError, TypeError, ValueError):
            continue
        return None if math.isnan(value) else value
    return None


class PrometheusSource:
    """One Prometheus; `measure` is blocking (the handler runs it in a thread)."""

    def __init__(self, url: str, timeout_seconds: float) -> None:
        self.url = url
        self.timeout = timeout_seconds
        self.client = PrometheusConnect(url=url, disable_ssl=False, timeout=int(max(1, math.ceil(timeout_seconds))))

    def _query(self, query: str) -> list[dict[str, Any]]:
        result = self.client.custom_query(query, params={"timeout": f"{self.timeout:g}s"})
        return list(result) if isinstance(result, list) else []

    def measure(
        self, namespace: str, name: str, stable: str, canary: str, window_seconds: float, with_drift: bool
    ) -> Measurement:
        revisions = [stable, canary]
        queries = {
            "requests": promql.requests(namespace, name, revisions, window_seconds),
            "errorRate": promql.errors(namespace, name, revisions, window_seconds),
            "p99LatencySeconds": promql.latency_buckets(namespace, name, revisions, window_seconds),
        }
        if with_drift:
            queries["drift"] = promql.divergence_buckets(namespace, name, canary, window_seconds)
        try:
            scraped = _by_revision(self._query(promql.scraped(namespace, name, revisions)))
            counts = _by_revision(self._query(queries["requests"]))
            errors = _by_revision(self._query(queries["errorRate"]))
            buckets = _buckets(self._query(queries["p99LatencySeconds"]))
            drift = None
            if with_drift:
                histogram = _buckets(self._query(queries["drift"])).get("", ())
                total = _scalar(self._query(promql.divergence_sum(namespace, name, canary, window_seconds)))
                count = histogram[-1][1] if histogram else 0.0
                drift = DriftSample(
                    comparisons=count, mean=(total / count) if total is not None and count else None, buckets=histogram
                )
        except (requests.RequestException, PrometheusApiClientException, ValueError) as error:
            empty = TrackSample(None, None, None, scraped=False)
            return Measurement(
                empty, empty, None, query_error=f"{type(error).__name__}: {error}"[:300], queries=queries
            )

        def track(revision: str) -> TrackSample:
            # A counter series appears with a revision's first request; no series yet means zero, not blind.
            return TrackSample(
                requests=counts.get(revision, 0.0) if revision in scraped else None,
                errors=errors.get(revision, 0.0) if revision in scraped else None,
                buckets=buckets.get(revision),
                scraped=revision in scraped,
            )

        return Measurement(track(stable), track(canary), drift, queries=queries)
