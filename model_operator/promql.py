"""PromQL for the analysis, built by pure functions so every query is testable and visible in the docs.

Each query returns one series per revision, keyed by the identity labels (namespace, ModelDeployment,
revision), so canary and stable are measured by the same query over the same window, and the looks of
many ModelDeployments can go out as one query (`union`) whose answer still says whose series is whose.
Only user traffic counts: the router's mirror probes carry their own `source` label. The request SLIs come
from a `Source`: ModelShip's runtime's own metrics; in router mode, for a revision another server runs
(vLLM, llama.cpp, any image), the router's metrics of the requests it forwarded to each revision, which mean
the same whatever the server; outside router mode, vLLM's own metrics (`SERVER_SOURCES`), or the ones a
custom server's spec names (`custom_source`). Metric and
label names come from model_runtime.contract, which the runtime and the router use to export them. Label
values are escaped; revisions are hex and names DNS labels, but nothing here trusts that.
"""

from __future__ import annotations

from dataclasses import dataclass

from model_runtime.contract import (
    ANSWERED_ENDPOINTS,
    CHOICES_TOTAL,
    CODE_LABEL,
    ENDPOINT_LABEL,
    ENDPOINT_OF_PATH,
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

from .api.spec import Runtime, ServerMetrics

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
    """Where a revision's request SLIs are read: the counter of its requests with the matchers that keep
    users' requests to the answering endpoints and the one that marks a server error, its latency
    histogram with its own matchers, and the series that says Prometheus sees it."""

    requests: str
    users: str
    server_errors: str
    duration: str
    duration_users: str
    seen: str
    seen_when: str = ""  # a comparison that keeps only the `seen` series that mean "scraped"


_SERVER_ERROR = f"{CODE_LABEL}=~{_quote(SERVER_ERRORS)}"
_USERS = f"{_ANSWERED},{SOURCE_LABEL}={_quote(SOURCE_USER)}"
RUNTIME = Source(REQUESTS_TOTAL, _USERS, _SERVER_ERROR, REQUEST_DURATION, _USERS, MODEL_READY)
# The router counts only its clients' requests (its mirror probes go to the pods directly); a revision is
# seen once a router has it in its routing config, at whatever weight.
ROUTER = Source(ROUTER_REQUESTS_TOTAL, _ANSWERED, _SERVER_ERROR, ROUTER_REQUEST_DURATION, _ANSWERED, ROUTER_WEIGHT)
# vLLM's OpenAI server: prometheus-fastapi-instrumentator counts requests per route (`handler`, the path)
# with status grouped as 2xx/4xx/5xx; its own engine histogram times each request from arrival to its last
# token (finer buckets than the HTTP one's 0.1/0.5/1 s, but without the requests that failed, and no
# route label). Its series get the identity labels from the pod's labels (contract.identity_relabelings).
_VLLM_ROUTES = "|".join(path for path, endpoint in ENDPOINT_OF_PATH.items() if endpoint in ANSWERED_ENDPOINTS)
VLLM = Source(
    "http_requests_total",
    f"handler=~{_quote(_VLLM_ROUTES)}",
    f"status={_quote('5xx')}",
    "vllm:e2e_request_latency_seconds",
    "",
    "vllm:num_requests_running",
)
# Each server's own metrics, mapped here and nowhere else. llama.cpp's server counts tokens and slots but
# no requests, status codes or latencies: it is not here, and the spec's rules keep it to router mode,
# where the router measures every server the same way. A custom image's metrics are what its spec names.
SERVER_SOURCES = {"modelship": RUNTIME, "vllm": VLLM}


def custom_source(metrics: ServerMetrics) -> Source:
    """A custom server's own metrics as its spec names them. Prometheus's `up` of the pod's scrape, which
    the pod's labels give the identity labels, says whether the server is scraped: a counter with labels
    has no series before its first request, and a failing scrape is blindness, not zero traffic."""
    return Source(
        metrics.requests,
        ",".join(metrics.requests_match),
        ",".join(metrics.server_errors_match),
        metrics.latency,
        ",".join(metrics.latency_match),
        "up",
        " == 1",
    )


def own_source(runtime: Runtime) -> Source | None:
    """Where a revision's server's own metrics give its request SLIs; None when they do not."""
    if runtime.server == "custom":
        return custom_source(runtime.custom.metrics) if runtime.custom and runtime.custom.metrics else None
    return SERVER_SOURCES.get(runtime.server)


def _join(*matchers: str) -> str:
    return ",".join(matcher for matcher in matchers if matcher)


def requests(namespace: str, name: str, revisions: list[str], seconds: float, source: Source = RUNTIME) -> str:
    match = selector(namespace, name, revisions, source.users)
    return f"sum by ({BY_IDENTITY}) (increase({source.requests}{match}[{window(seconds)}]))"


def errors(namespace: str, name: str, revisions: list[str], seconds: float, source: Source = RUNTIME) -> str:
    match = selector(namespace, name, revisions, _join(source.users, source.server_errors))
    return f"sum by ({BY_IDENTITY}) (increase({source.requests}{match}[{window(seconds)}]))"


def latency_buckets(namespace: str, name: str, revisions: list[str], seconds: float, source: Source = RUNTIME) -> str:
    """Cumulative request-duration buckets per revision; the P99 and the slow-request counts are computed
    from them (analysis.quantile is histogram_quantile's interpolation)."""
    match = selector(namespace, name, revisions, source.duration_users)
    return f"sum by ({BY_IDENTITY}, le) (increase({source.duration}_bucket{match}[{window(seconds)}]))"


def choices(namespace: str, name: str, revisions: list[str], seconds: float) -> str:
    """Generated choices per revision and content outcome (ok, empty, ...): the content SLI."""
    generated = f"{ENDPOINT_LABEL}=~{_quote('|'.join(GENERATION_ENDPOINTS))},{SOURCE_LABEL}={_quote(SOURCE_USER)}"
    match = selector(namespace, name, revisions, generated)
    return f"sum by ({BY_IDENTITY}, {OUTCOME_LABEL}) (increase({CHOICES_TOTAL}{match}[{window(seconds)}]))"


def scraped(namespace: str, name: str, revisions: list[str], source: Source = RUNTIME) -> str:
    """Which revisions Prometheus scrapes at all: an absent series means blindness, not zero traffic."""
    return f"max by ({BY_IDENTITY}) ({source.seen}{selector(namespace, name, revisions)}){source.seen_when}"


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
