"""The Prometheus adapter: run the analysis queries (prometheus-api-client, with a timeout) and turn the
answers into Measurements. It decides nothing; a failed query becomes `query_error`.

`measure_many` answers the looks of many ModelDeployments with one query per SLI: each look's own query
is a part of the union, and the answer is split back by the identity labels."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import requests
from prometheus_api_client import PrometheusConnect
from prometheus_api_client.exceptions import PrometheusApiClientException

from model_runtime.contract import IDENTITY_LABELS, OUTCOME_LABEL

from . import promql
from .analysis import DriftSample, Measurement, TrackSample

Identity = tuple[str, str, str]  # namespace, ModelDeployment, revision


@dataclass(frozen=True)
class Look:
    """One ModelDeployment's analysis: its canary against its stable over the window."""

    namespace: str
    name: str
    stable: str
    canary: str
    window_seconds: float
    with_drift: bool
    with_content: bool = False
    sources: tuple[promql.Source, promql.Source] = (promql.RUNTIME, promql.RUNTIME)  # stable's, canary's

    def identity(self, revision: str) -> Identity:
        return (self.namespace, self.name, revision)

    def _per_source(self, query: Callable[[list[str], promql.Source], str]) -> str:
        """One query over both revisions when one source measures both; else each from its own source."""
        stable, canary = self.sources
        if stable == canary:
            return query([self.stable, self.canary], stable)
        return promql.union([query([self.stable], stable), query([self.canary], canary)])

    def scraped_query(self) -> str:
        return self._per_source(lambda revisions, source: promql.scraped(self.namespace, self.name, revisions, source))

    def queries(self) -> dict[str, str]:
        """Its queries by SLI, as status shows them: the part of a batch that is this look's."""
        revisions = [self.stable, self.canary]
        seconds = self.window_seconds
        found = {
            "requests": self._per_source(
                lambda rs, source: promql.requests(self.namespace, self.name, rs, seconds, source)
            ),
            "errorRate": self._per_source(
                lambda rs, source: promql.errors(self.namespace, self.name, rs, seconds, source)
            ),
            "p99LatencySeconds": self._per_source(
                lambda rs, source: promql.latency_buckets(self.namespace, self.name, rs, seconds, source)
            ),
        }
        if self.with_drift:
            found["drift"] = promql.divergence_buckets(self.namespace, self.name, self.canary, self.window_seconds)
        if self.with_content:
            found["contentIssues"] = promql.choices(self.namespace, self.name, revisions, self.window_seconds)
        return found


def _identity(labels: dict[str, Any]) -> Identity | None:
    values = tuple(labels.get(label) for label in IDENTITY_LABELS)
    if any(not isinstance(value, str) for value in values):
        return None
    return (str(values[0]), str(values[1]), str(values[2]))


def _values(result: list[dict[str, Any]]) -> dict[Identity, float]:
    values: dict[Identity, float] = {}
    for series in result:
        identity = _identity(series.get("metric", {}))
        try:
            value = float(series["value"][1])
        except (KeyError, IndexError, TypeError, ValueError):
            continue
        if identity is not None:
            values[identity] = value
    return values


def _buckets(result: list[dict[str, Any]]) -> dict[Identity, tuple[tuple[float, float], ...]]:
    found: dict[Identity, list[tuple[float, float]]] = {}
    for series in result:
        labels = series.get("metric", {})
        identity = _identity(labels)
        try:
            bound, count = float(labels["le"]), float(series["value"][1])
        except (KeyError, IndexError, TypeError, ValueError):
            continue
        if identity is not None:
            found.setdefault(identity, []).append((bound, count))
    return {identity: tuple(sorted(pairs)) for identity, pairs in found.items()}


def _by_outcome(result: list[dict[str, Any]]) -> dict[Identity, dict[str, float]]:
    found: dict[Identity, dict[str, float]] = {}
    for series in result:
        labels = series.get("metric", {})
        identity, outcome = _identity(labels), labels.get(OUTCOME_LABEL)
        try:
            count = float(series["value"][1])
        except (KeyError, IndexError, TypeError, ValueError):
            continue
        if identity is not None and isinstance(outcome, str):
            found.setdefault(identity, {})[outcome] = count
    return found


@dataclass(frozen=True)
class _Answers:
    scraped: dict[Identity, float]
    requests: dict[Identity, float]
    errors: dict[Identity, float]
    latency: dict[Identity, tuple[tuple[float, float], ...]]
    divergence: dict[Identity, tuple[tuple[float, float], ...]]
    divergence_sum: dict[Identity, float]
    content: dict[Identity, dict[str, float]]

    def measurement(self, look: Look, queries: dict[str, str]) -> Measurement:
        def track(revision: str) -> TrackSample:
            identity = look.identity(revision)
            scraped = identity in self.scraped
            # A counter series appears with a revision's first request; no series yet means zero, not blind.
            return TrackSample(
                requests=self.requests.get(identity, 0.0) if scraped else None,
                errors=self.errors.get(identity, 0.0) if scraped else None,
                buckets=self.latency.get(identity),
                scraped=scraped,
                # no choices yet is none of each kind, as with the request counters
                content=self.content.get(identity, {}) if look.with_content and scraped else None,
            )

        drift = None
        if look.with_drift:
            canary = look.identity(look.canary)
            histogram = self.divergence.get(canary, ())
            total = self.divergence_sum.get(canary)
            count = histogram[-1][1] if histogram else 0.0
            mean = total / count if total is not None and not math.isnan(total) and count else None
            drift = DriftSample(comparisons=count, mean=mean, buckets=histogram)
        return Measurement(
            track(look.stable), track(look.canary), drift, queries=queries, with_content=look.with_content
        )


class PrometheusSource:
    """One Prometheus; `measure_many` is blocking (the batcher runs it in a thread)."""

    def __init__(self, url: str, timeout_seconds: float) -> None:
        self.url = url
        self.timeout = timeout_seconds
        self.client = PrometheusConnect(url=url, disable_ssl=False, timeout=int(max(1, math.ceil(timeout_seconds))))

    def _query(self, query: str) -> list[dict[str, Any]]:
        result = self.client.custom_query(query, params={"timeout": f"{self.timeout:g}s"})
        return list(result) if isinstance(result, list) else []

    def _union(self, parts: list[str]) -> list[dict[str, Any]]:
        return self._query(promql.union(parts)) if parts else []

    def measure_many(self, looks: Sequence[Look]) -> list[Measurement]:
        """One query per SLI for all the looks; a failed query fails every look of the batch alike."""
        if not looks:
            return []
        asked = [look.queries() for look in looks]
        drifting = [look for look in looks if look.with_drift]
        try:
            answers = _Answers(
                scraped=_values(self._union([lk.scraped_query() for lk in looks])),
                requests=_values(self._union([queries["requests"] for queries in asked])),
                errors=_values(self._union([queries["errorRate"] for queries in asked])),
                latency=_buckets(self._union([queries["p99LatencySeconds"] for queries in asked])),
                divergence=_buckets(self._union([queries["drift"] for queries in asked if "drift" in queries])),
                divergence_sum=_values(
                    self._union(
                        [promql.divergence_sum(lk.namespace, lk.name, lk.canary, lk.window_seconds) for lk in drifting]
                    )
                ),
                content=_by_outcome(
                    self._union([queries["contentIssues"] for queries in asked if "contentIssues" in queries])
                ),
            )
        except (requests.RequestException, PrometheusApiClientException, ValueError) as error:
            empty = TrackSample(None, None, None, scraped=False)
            message = f"{type(error).__name__}: {error}"[:300]
            return [
                Measurement(empty, empty, None, query_error=message, queries=q, with_content=look.with_content)
                for look, q in zip(looks, asked, strict=True)
            ]
        return [answers.measurement(look, queries) for look, queries in zip(looks, asked, strict=True)]
