"""PromQL for the analysis, built by pure functions so every query is testable and visible in the docs.

Each query returns one series per revision (`sum by (revision)`), so canary and stable are measured by
the same query over the same window. Label values are escaped; revisions are hex and names DNS labels,
but nothing here trusts that.
"""

from __future__ import annotations

ANSWERED_ENDPOINTS = "completions|chat_completions|embeddings"


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


def requests(namespace: str, name: str, revisions: list[str], seconds: float) -> str:
    match = selector(namespace, name, revisions, f"endpoint=~{_quote(ANSWERED_ENDPOINTS)}")
    return f"sum by (revision) (increase(modelship_requests_total{match}[{window(seconds)}]))"


def errors(namespace: str, name: str, revisions: list[str], seconds: float) -> str:
    match = selector(namespace, name, revisions, f'endpoint=~{_quote(ANSWERED_ENDPOINTS)},code=~"5.."')
    return f"sum by (revision) (increase(modelship_requests_total{match}[{window(seconds)}]))"


def latency_buckets(namespace: str, name: str, revisions: list[str], seconds: float) -> str:
    """Cumulative request-duration buckets per revision; the P99 and the slow-request counts are computed
    from them (analysis.quantile is histogram_quantile's interpolation)."""
    match = selector(namespace, name, revisions, f"endpoint=~{_quote(ANSWERED_ENDPOINTS)}")
    return f"sum by (revision, le) (increase(modelship_request_duration_seconds_bucket{match}[{window(seconds)}]))"


def scraped(namespace: str, name: str, revisions: list[str]) -> str:
    """Which revisions Prometheus scrapes at all: an absent series means blindness, not zero traffic."""
    return f"max by (revision) (modelship_model_ready{selector(namespace, name, revisions)})"


def divergence_sum(namespace: str, name: str, canary: str, seconds: float) -> str:
    match = selector(namespace, name, [canary])
    return f"sum(increase(modelship_output_divergence_sum{match}[{window(seconds)}]))"


def divergence_count(namespace: str, name: str, canary: str, seconds: float) -> str:
    match = selector(namespace, name, [canary])
    return f"sum(increase(modelship_output_divergence_count{match}[{window(seconds)}]))"
