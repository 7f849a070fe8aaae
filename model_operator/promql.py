"""PromQL for the analysis, built by pure functions so every query is testable and visible in the docs.

Each query returns one series per revision, keyed by the identity labels (namespace, ModelDeployment,
revision), so canary and stable are measured by the same query over the same window, and the looks of
many ModelDeployments can go out as one query (`union`) whose answer still says whose series is whose.
Only user traffic counts: the router's mirror probes carry their own `source` label. The request SLIs come
from one of two `Source`s: ModelShip's runtime's own metrics, or, for a revision another server runs (vLLM,
llama.cpp, any image), the router's metrics of the requests it forwarded to each revision, which mean the
same whatever the server. Metric and label names come from model_runtime.contract, which the runtime and
the router use to export them. Label values are escaped; revisions are hex and names DNS labels, but
nothing here trusts that.
"""

from __future__ import annotations

from dataclasses import dataclass

from model_runtime.contract import (
    ANSWERED_ENDPOINTS,
    CHOICES_TOTAL,
    CODE_LABEL,
    ENDPOINT_LABEL,
    GENERATION_ENDPOINTS,
    IDENTITY_LABELS,
    MODEL_READY,
    OUTCOME_LABEL,
    OUTPUT_DIVERGENCE,
    REQUEST_DURATION,
    REQUESTS_TOTAL,
    ROUTER_REQUEST_DURATION,
    ROUTER_REQUESTS_TOTAL,
    ROUTER_WEIGHT,
    SOURCE_LABEL,
    SOURCE_USER,
)

SERVER_ERRORS = "5.."  # a client that hung up is 499, and not the server's fault
BY_IDENTITY = ", ".join(IDENTITY_LABELS)


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def selector(namespace: str, name: str, revisions: list[str], extra: str = "") -> str:
    """`{namespace="..", model_deployment="..", revision=~"a|b"[, extra]}`."""
    alternatives = "|".join(revisions)
    parts = [f"namespace={_quote(namespace)}", f"model_deployment={_quote(name)}", f"revision=~{_quote(alternatives)}"]
    if extra:
        parts.append(extra)
    return "{" + ",".join(parts) + "}"


def window(seconds: float) -> str:
    return f"{max(1, round(seconds))}s"


_ANSWERED = f"{ENDPOINT_LABEL}=~{_quote('|'.join(ANSWERED_ENDPOINTS))}"


@dataclass(frozen=True)
class Source:
    """Where a revision's request SLIs are read: the counter and histogram of its requests, the matchers
    that keep users' requests to the answering endpoints, and the series that says Prometheus sees it."""

    requests: str
    duration: str
    users: str
    seen: str


RUNTIME = Source(REQUESTS_TOTAL, REQUEST_DURATION, f"{_ANSWERED},{SOURCE_LABEL}={_quote(SOURCE_USER)}", MODEL_READY)
# The router counts only its clients' requests (its mirror probes go to the pods directly); a revision is
# seen once a router has it in its routing config, at whatever weight.
ROUTER = Source(ROUTER_REQUESTS_TOTAL, ROUTER_REQUEST_DURATION, _ANSWERED, ROUTER_WEIGHT)


def _user_requests(source: Source, namespace: str, name: str, revisions: list[str], extra: str = "") -> str:
    return selector(namespace, name, revisions, source.users + (f",{extra}" if extra else ""))


def requests(namespace: str, name: str, revisions: list[str], seconds: float, source: Source = RUNTIME) -> str:
    match = _user_requests(source, namespace, name, revisions)
    return f"sum by ({BY_IDENTITY}) (increase({source.requests}{match}[{window(seconds)}]))"


def errors(namespace: str, name: str, revisions: list[str], seconds: float, source: Source = RUNTIME) -> str:
    match = _user_requests(source, namespace, name, revisions, f"{CODE_LABEL}=~{_quote(SERVER_ERRORS)}")
    return f"sum by ({BY_IDENTITY}) (increase({source.requests}{match}[{window(seconds)}]))"


def latency_buckets(namespace: str, name: str, revisions: list[str], seconds: float, source: Source = RUNTIME) -> str:
    """Cumulative request-duration buckets per revision; the P99 and the slow-request counts are computed
    from them (analysis.quantile is histogram_quantile's interpolation)."""
    match = _user_requests(source, namespace, name, revisions)
    return f"sum by ({BY_IDENTITY}, le) (increase({source.duration}_bucket{match}[{window(seconds)}]))"


def choices(namespace: str, name: str, revisions: list[str], seconds: float) -> str:
    """Generated choices per revision and content outcome (ok, empty, ...): the content SLI."""
    generated = f"{ENDPOINT_LABEL}=~{_quote('|'.join(GENERATION_ENDPOINTS))},{SOURCE_LABEL}={_quote(SOURCE_USER)}"
    match = selector(namespace, name, revisions, generated)
    return f"sum by ({BY_IDENTITY}, {OUTCOME_LABEL}) (increase({CHOICES_TOTAL}{match}[{window(seconds)}]))"


def scraped(namespace: str, name: str, revisions: list[str], source: Source = RUNTIME) -> str:
    """Which revisions Prometheus scrapes at all: an absent series means blindness, not zero traffic."""
    return f"max by ({BY_IDENTITY}) ({source.seen}{selector(namespace, name, revisions)})"


def divergence_buckets(namespace: str, name: str, canary: str, seconds: float) -> str:
    """The canary's divergence histogram (cumulative, with _count as +Inf); mean and test come from it."""
    match = selector(namespace, name, [canary])
    return f"sum by ({BY_IDENTITY}, le) (increase({OUTPUT_DIVERGENCE}_bucket{match}[{window(seconds)}]))"


def divergence_sum(namespace: str, name: str, canary: str, seconds: float) -> str:
    match = selector(namespace, name, [canary])
    return f"sum by ({BY_IDENTITY}) (increase({OUTPUT_DIVERGENCE}_sum{match}[{window(seconds)}]))"


def union(queries: list[str]) -> str:
    """One query answering every part. Each part selects one ModelDeployment by exact namespace and name
    and keeps the identity labels, so the parts' label sets never meet and `or` keeps every series."""
    if len(queries) == 1:
        return queries[0]
    return " or ".join(f"({query})" for query in queries)
