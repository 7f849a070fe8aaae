"""The analysis verdict from synthetic measurements, and the PromQL it is fed by."""

from __future__ import annotations

import math

import pytest

from model_operator import promql
from model_operator.analysis import (
    Criteria,
    DriftSample,
    Measurement,
    TrackSample,
    binomial_tail,
    judge,
    quantile,
    slower_than,
)
from model_operator.api.spec import Thresholds
from model_operator.api.status import Verdict

CRITERIA = Criteria(Thresholds(), min_requests=200, confidence=0.99)
NAN = float("nan")


BOUNDS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0)


def histogram(latencies: list[float]) -> tuple[tuple[float, float], ...]:
    return tuple((bound, float(sum(1 for x in latencies if x <= bound))) for bound in (*BOUNDS, math.inf))


def track(
    requests: float | None,
    errors: float | None = 0,
    p99: float | None = 0.1,
    scraped: bool = True,
    slow: float | None = None,
) -> TrackSample:
    """`requests` requests, most at 60% of `p99` and the slowest 1% (or a `slow` share) at `p99`."""
    if requests is None or p99 is None or math.isnan(requests) or math.isnan(p99):
        return TrackSample(requests=requests, errors=errors, buckets=None, scraped=scraped)
    count = max(0, round(requests))
    tail = max(1, round(count * (slow if slow is not None else 0.01))) if count else 0
    return TrackSample(
        requests=requests,
        errors=errors,
        scraped=scraped,
        buckets=histogram([p99 * 0.6] * (count - tail) + [p99] * tail),
    )


CASES = [
    # (id, stable, canary, drift, query error, expected verdict, words in the message)
    ("healthy", track(1000), track(300), None, None, Verdict.PASS, "every SLI"),
    ("low-traffic", track(1000), track(40), None, None, Verdict.INCONCLUSIVE, "waiting for 200"),
    ("no-traffic-yet", track(0), track(0), None, None, Verdict.INCONCLUSIVE, "waiting"),
    ("zero-errors-both", track(5000, 0), track(5000, 0), None, None, Verdict.PASS, ""),
    ("all-errors-early", track(1000, 0), track(20, 20), None, None, Verdict.FAIL, "above the 1.00% cap"),
    ("some-errors-significant", track(2000, 2), track(400, 16), None, None, Verdict.FAIL, "error rate"),
    ("one-error-is-noise", track(2000, 2), track(400, 1), None, None, Verdict.PASS, ""),
    ("both-erroring-equally-under-cap", track(4000, 20), track(1000, 5), None, None, Verdict.PASS, ""),
    ("slow-canary", track(1000, p99=0.1), track(300, p99=0.4, slow=0.5), None, None, Verdict.FAIL, "over 1.25x"),
    (
        "all-slow-few-requests",
        track(1000, p99=0.1),
        track(6, p99=0.4, slow=1.0),
        None,
        None,
        Verdict.FAIL,
        "6 of 6 requests slower",
    ),
    ("one-slow-request-is-noise", track(1000, p99=0.025), track(28, p99=0.048), None, None, Verdict.INCONCLUSIVE, ""),
    (
        "a-slow-tail-of-one-percent-is-a-p99-not-a-regression",
        TrackSample(1000, 0, histogram([0.06] * 990 + [0.1] * 10), True),
        TrackSample(300, 0, histogram([0.06] * 297 + [0.4] * 3), True),
        None,
        None,
        Verdict.PASS,
        "",
    ),
    ("within-noise-floor", track(1000, p99=0.010), track(300, p99=0.016, slow=0.5), None, None, Verdict.PASS, ""),
    ("over-absolute-cap", track(1000, p99=0.6), track(300, p99=0.65, slow=0.5), None, None, Verdict.FAIL, "cap"),
    (
        "a-stall-that-hits-both-tracks-is-not-the-canary",
        TrackSample(30, 0, histogram([0.02] * 26 + [1.2] * 4), True),
        TrackSample(3, 0, histogram([1.1] * 2 + [0.02]), True),
        None,
        None,
        Verdict.INCONCLUSIVE,
        "",
    ),
    (
        "an-outage-that-hits-both-tracks-is-not-the-canary",
        track(1000, errors=80),
        track(300, errors=25),
        None,
        None,
        Verdict.PASS,
        "",
    ),
    ("nan-latency", track(1000, p99=NAN), track(300, p99=NAN), None, None, Verdict.INCONCLUSIVE, "histogram"),
    ("nan-counts", track(NAN, NAN), track(NAN, NAN), None, None, Verdict.INCONCLUSIVE, "waiting"),
    ("empty-results", track(None, None, None), track(None, None, None), None, None, Verdict.INCONCLUSIVE, ""),
    (
        "canary-not-scraped",
        track(1000),
        track(None, None, None, scraped=False),
        None,
        None,
        Verdict.NO_DATA,
        "canary track",
    ),
    (
        "prometheus-down",
        track(None, None, None),
        track(None, None, None),
        None,
        "connection refused",
        Verdict.ERROR,
        "connection refused",
    ),
    ("failure-beats-query-error", track(1000, 0), track(100, 100), None, "timeout", Verdict.FAIL, "cap"),
    ("drift-ok", track(1000), track(300), DriftSample(40, 0.02), None, Verdict.PASS, ""),
    ("drift-high", track(1000), track(300), DriftSample(40, 0.4), None, Verdict.FAIL, "diverge"),
    (
        "drift-few-comparisons",
        track(1000),
        track(300),
        DriftSample(3, 0.4),
        None,
        Verdict.INCONCLUSIVE,
        "mirrored comparisons",
    ),
    ("drift-nan", track(1000), track(300), DriftSample(0, NAN), None, Verdict.INCONCLUSIVE, ""),
]


@pytest.mark.parametrize(
    ("stable", "canary", "drift", "error", "verdict", "words"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_verdicts(
    stable: TrackSample, canary: TrackSample, drift: DriftSample | None, error: str | None, verdict: Verdict, words: str
) -> None:
    outcome = judge(Measurement(stable=stable, canary=canary, drift=drift, query_error=error), CRITERIA)
    assert outcome.verdict == verdict, outcome.message
    assert words in outcome.message


def test_every_metric_is_reported_with_both_tracks() -> None:
    outcome = judge(Measurement(track(1000, 3, 0.1), track(300, 1, 0.11), DriftSample(30, 0.01)), CRITERIA)
    by_name = {m.name: m for m in outcome.metrics}
    assert set(by_name) == {"requests", "errorRate", "p99LatencySeconds", "drift"}
    assert by_name["errorRate"].canary == pytest.approx(1 / 300)
    assert by_name["errorRate"].stable == pytest.approx(3 / 1000)
    assert by_name["p99LatencySeconds"].canary_samples == 300
    assert outcome.enough_requests


@pytest.mark.parametrize(
    ("k", "n", "p", "expected"),
    [
        (0, 10, 0.5, 1.0),
        (11, 10, 0.5, 0.0),
        (10, 10, 0.5, 0.5**10),
        (1, 1, 0.3, 0.3),
        (5, 10, 0.5, 0.623046875),
        (3, 100, 0.0, 0.0),
        (3, 100, 1.0, 1.0),
    ],
)
def test_binomial_tail(k: int, n: int, p: float, expected: float) -> None:
    assert binomial_tail(k, n, p) == pytest.approx(expected, rel=1e-9)


def test_binomial_tail_large_n_uses_the_normal_approximation() -> None:
    exact_side = binomial_tail(120, 20_000, 0.005)
    approximate = binomial_tail(240, 40_000, 0.005)
    assert 0 < approximate < exact_side < 1
    assert math.isfinite(approximate)


def test_error_test_needs_fewer_requests_the_worse_the_canary_is() -> None:
    def first_failing_n(rate: float) -> int:
        for n in range(1, 2000):
            if judge(Measurement(track(1000, 0), track(n, round(n * rate)), None), CRITERIA).verdict == Verdict.FAIL:
                return n
        return 10**9

    assert first_failing_n(1.0) < first_failing_n(0.2) < first_failing_n(0.05)
    assert first_failing_n(1.0) <= 5


def test_promql_selects_both_tracks_in_one_query() -> None:
    query = promql.requests("team-a", "chat", ["s1", "c1"], 42.4)
    assert query == (
        'sum by (revision) (increase(modelship_requests_total{namespace="team-a",'
        'model_deployment="chat",revision=~"s1|c1",endpoint=~"completions|chat_completions|embeddings"}'
        "[42s]))"
    )
    assert 'code=~"5.."' in promql.errors("ns", "m", ["a"], 10)
    assert promql.latency_buckets("ns", "m", ["a", "b"], 10).startswith("sum by (revision, le) (increase(")
    assert (
        promql.scraped("ns", "m", ["a"]) == 'max by (revision) (modelship_model_ready{namespace="ns",'
        'model_deployment="m",revision=~"a"})'
    )
    assert promql.window(0.2) == "1s"


def test_promql_escapes_label_values() -> None:
    assert 'namespace="we\\"ird\\\\"' in promql.selector('we"ird\\', "m", ["a"])


@pytest.mark.parametrize(
    ("buckets", "expected"),
    [
        (((0.1, 50.0), (0.2, 100.0), (math.inf, 100.0)), 0.198),
        (((0.1, 100.0), (0.2, 100.0), (math.inf, 100.0)), 0.099),
        (((0.1, 0.0), (0.2, 0.0), (math.inf, 10.0)), 0.2),
        (((0.1, 0.0), (math.inf, 0.0)), None),
        (((0.1, 5.0), (0.2, 10.0)), None),
    ],
)
def test_quantile_matches_histogram_quantile(buckets: tuple[tuple[float, float], ...], expected: float | None) -> None:
    value = quantile(0.99, buckets)
    assert value == (pytest.approx(expected) if expected is not None else None)


def test_slower_than_counts_only_certainly_slower_requests() -> None:
    buckets = ((0.05, 90.0), (0.1, 95.0), (0.2, 99.0), (math.inf, 100.0))
    assert slower_than(0.1, buckets) == 5
    assert slower_than(0.07, buckets) == 5  # the 0.05-0.1 bucket may hold faster ones: not counted
    assert slower_than(10.0, buckets) == 0
