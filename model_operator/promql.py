"""PromQL for the analysis, built by pure functions so every query is testable and visible in the docs.

Each query returns one series per revision, keyed by the identity labels (namespace, ModelDeployment,
revision), so canary and stable are measured by the same query over the same window, and the looks of
many ModelDeployments can go out as one query (`union`) whose answer still says whose series is whose.
Only user traffic counts: the router's mirror probes carry their own `source` label. Metric and label
names come from model_runtime.contract, which the runtime uses to export them. Label values are escaped;
revisions are hex and names DNS labels, but nothing here trusts that.
"""

from __future__ import annotations

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


def _user_requests(namespace: str, name: str, revisions: list[str], extra: str = "") -> str:
    answered = f"{ENDPOINT_LABEL}=~{_quote('|'.join(ANSWERED_ENDPOINTS))},{SOURCE_LABEL}={_quote(SOURCE_USER)}"
    return selector(namespace, name, revisions, answered + (f",{extra}" if extra else ""))


def requests(namespace: str, name: str, revisions: list[str], seconds: float) -> str:
    match = _user_requests(namespace, name, revisions)
    return f"sum by ({BY_IDENTITY}) (increase({REQUESTS_TOTAL}{match}[{window(seconds)}]))"


def errors(namespace: str, name: str, revisions: list[str], seconds: float) -> str:
    match = _user_requests(namespace, name, revisions, f"{CODE_LABEL}=~{_quote(SERVER_ERRORS)}")
    return f"sum by ({BY_IDENTITY}) (increase({REQUESTS_TOTAL}{match}[{window(seconds)}]))"


def latency_buckets(namespace: str, name: str, revisions: list[str], seconds: float) -> str:
    """Cumulative request-duration buckets per revision; the P99 and the slow-request counts are computed
    from them (analysis.quantile is histogram_quantile's interpolation)."""
    match = _user_requests(namespace, name, revisions)
    return f"sum by ({BY_IDENTITY}, le) (increase({REQUEST_DURATION}_bucket{match}[{window(seconds)}]))"


def choices(namespace: str, name: str, revisions: list[str], seconds: float) -> str:
    """Generated choices per revision and content outcome (ok, empty, ...): the content SLI."""
    generated = f"{ENDPOINT_LABEL}=~{_quote('|'.join(GENERATION_ENDPOINTS))},{SOURCE_LABEL}={_quote(SOURCE_USER)}"
    match = selector(namespace, name, revisions, generated)
    return f"sum by ({BY_IDENTITY}, {OUTCOME_LABEL}) (increase({CHOICES_TOTAL}{match}[{window(seconds)}]))"


def scraped(namespace: str, name: str, revisions: list[str]) -> str:
    """Which revisions Prometheus scrapes at all: an absent series means blindness, not zero traffic."""
    return f"max by ({BY_IDENTITY}) ({MODEL_READY}{selector(namespace, name, revisions)})"


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
