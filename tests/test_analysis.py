"""The analysis verdict from synthetic measurements, and the PromQL it is fed by."""

from __future__ import annotations

import math
from typing import Any

import pytest

from model_operator import promql
from model_operator.analysis import (
    Criteria,
    DriftSample,
    Measurement,
    TrackSample,
    bound_at_or_above,
    content_measured,
    count_above,
    drift_measured,
    judge,
    lower_bounds,
    metrics_sources,
    pooled,
    quantile,
    unmeasured,
)
from model_operator.api import parse_spec
from model_operator.api.spec import METRICS_MAPPED, Runtime, Thresholds
from model_operator.api.status import Verdict
from model_operator.prometheus import Look
from model_runtime.contract import DEFAULT_LATENCY_BUCKETS

CRITERIA = Criteria(Thresholds(), min_requests=200, confidence=0.99)
NAN = float("nan")
DIVERGENCE_BOUNDS = (0.01, 0.02, 0.05, 0.1, 0.12, 0.14, 0.16, 0.18, 0.2, 0.25, 0.3, 0.4, 0.5, 0.75, 1.0)


def drift(values: list[float]) -> DriftSample:
    """Mirrored comparisons with these divergences, as the router's histogram reports them."""
    buckets = tuple((bound, float(sum(1 for v in values if v <= bound))) for bound in (*DIVERGENCE_BOUNDS, math.inf))
    return DriftSample(len(values), sum(values) / len(values) if values else NAN, buckets)


BOUNDS = DEFAULT_LATENCY_BUCKETS


def histogram(latencies: list[float]) -> tuple[tuple[float, float], ...]:
    return tuple((bound, float(sum(1 for x in latencies if x <= bound))) for bound in (*BOUNDS, math.inf))


def track(
    requests: float | None,
    errors: float | None = 0,
    p99: float | None = 0.1,
    scraped: bool = True,
    slow: float | None = None,
) -> TrackSample:
    """`requests` requests, most spread over 50-60% of `p99` and the slowest 1% (or a `slow` share) over
    90-100% of it."""
    if requests is None or p99 is None or math.isnan(requests) or math.isnan(p99):
        return TrackSample(requests=requests, errors=errors, buckets=None, scraped=scraped)
    count = max(0, round(requests))
    tail = max(1, round(count * (slow if slow is not None else 0.01))) if count else 0
    return TrackSample(
        requests=requests,
        errors=errors,
        scraped=scraped,
        buckets=histogram(_spread(p99 * 0.5, p99 * 0.6, count - tail) + _spread(p99 * 0.9, p99, tail)),
    )


def _spread(low: float, high: float, count: int) -> list[float]:
    return [low + (high - low) * (i + 1) / count for i in range(count)]


CASES = [
    # (id, stable, canary, drift, query error, expected verdict, words in the message)
    ("healthy", track(1000), track(300), None, None, Verdict.PASS, "every SLI"),
    ("low-traffic", track(1000), track(40), None, None, Verdict.INCONCLUSIVE, "waiting for 200"),
    ("no-traffic-yet", track(0), track(0), None, None, Verdict.INCONCLUSIVE, "waiting"),
    ("zero-errors-both", track(5000, 0), track(5000, 0), None, None, Verdict.PASS, ""),
    ("all-errors-early", track(1000, 0), track(20, 20), None, None, Verdict.FAIL, "above the 1.00% cap and"),
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
        "6 vs 0 requests slower than",
    ),
    (
        "one-slow-request-is-noise",
        track(1000, p99=0.025),
        TrackSample(28, 0, histogram([0.013] * 27 + [0.048]), True),
        None,
        None,
        Verdict.INCONCLUSIVE,
        "",
    ),
    (
        "a-slow-tail-of-one-percent-is-a-p99-not-a-regression",
        TrackSample(1000, 0, histogram([0.06] * 990 + [0.1] * 10), True),
        TrackSample(300, 0, histogram([0.06] * 297 + [0.4] * 3), True),
        None,
        None,
        Verdict.PASS,
        "",
    ),
    ("over-absolute-cap", track(1000, p99=0.45), track(300, p99=0.75, slow=0.5), None, None, Verdict.FAIL, "cap"),
    (
        "stable-over-the-cap-too-is-not-the-canary",
        track(1000, p99=0.75),
        track(300, p99=0.75),
        None,
        None,
        Verdict.PASS,
        "",
    ),
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
    ("drift-ok", track(1000), track(300), drift([0.02] * 40), None, Verdict.PASS, ""),
    ("drift-high", track(1000), track(300), drift([0.45] * 40), None, Verdict.FAIL, "significantly above 0.15"),
    (
        "drift-just-over-is-not-yet-significant",
        track(1000),
        track(300),
        drift([0.17] * 12),
        None,
        Verdict.PASS,
        "",
    ),
    (
        "drift-few-comparisons",
        track(1000),
        track(300),
        drift([0.4] * 3),
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


@pytest.mark.parametrize(("floor", "verdict"), [(0.5, Verdict.PASS), (0.1, Verdict.FAIL)])
def test_a_slowdown_within_the_noise_floor_passes(floor: float, verdict: Verdict) -> None:
    """1.3x stable's P99 breaks the 1.25 ratio, but +0.3 s may be within what the user calls noise."""
    criteria = Criteria(Thresholds(latency_noise_floor_seconds=floor, p99_latency_seconds=60), 200, 0.99)
    stable, canary = track(2000, p99=1.0, slow=0.05), track(2000, p99=1.3, slow=0.05)
    assert judge(Measurement(stable, canary, None), criteria).verdict == verdict


def test_every_metric_is_reported_with_both_tracks() -> None:
    outcome = judge(Measurement(track(1000, 3, 0.1), track(300, 1, 0.11), drift([0.01] * 30)), CRITERIA)
    by_name = {m.name: m for m in outcome.metrics}
    assert set(by_name) == {"requests", "errorRate", "p99LatencySeconds", "drift"}
    assert by_name["errorRate"].canary == pytest.approx(1 / 300)
    assert by_name["errorRate"].stable == pytest.approx(3 / 1000)
    assert by_name["p99LatencySeconds"].canary_samples == 300
    assert outcome.enough_requests


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
        'sum by (namespace, model_deployment, revision) (increase(modelship_requests_total{namespace="team-a",'
        'model_deployment="chat",revision=~"s1|c1",endpoint=~"completions|chat_completions|embeddings",'
        'source="user"}[42s]))'
    )
    assert 'code=~"5.."' in promql.errors("ns", "m", ["a"], 10)
    assert promql.latency_buckets("ns", "m", ["a", "b"], 10).startswith(
        "sum by (namespace, model_deployment, revision, le) (increase("
    )
    assert (
        promql.scraped("ns", "m", ["a"])
        == 'max by (namespace, model_deployment, revision) (modelship_model_ready{namespace="ns",'
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


def test_slow_requests_are_counted_above_one_bound_for_both_tracks() -> None:
    buckets = ((0.05, 90.0), (0.1, 95.0), (0.2, 99.0), (math.inf, 100.0))
    assert bound_at_or_above(0.07, buckets) == 0.1  # never below the limit: only certainly slower ones
    assert bound_at_or_above(0.1, buckets) == 0.1
    assert bound_at_or_above(10.0, buckets) is None
    assert count_above(0.1, buckets) == 5
    assert count_above(0.2, buckets) == 1
    assert pooled(buckets, ((0.05, 10.0), (0.1, 10.0), (0.2, 10.0), (math.inf, 10.0)))[0] == (0.05, 100.0)


def test_histogram_lower_bounds() -> None:
    cumulative = ((0.1, 3.0), (0.2, 5.0), (math.inf, 6.0))
    assert lower_bounds(cumulative) == ((0.0, 3.0), (0.1, 2.0), (0.2, 1.0))


def test_the_evidence_is_on_every_sli() -> None:
    queries = {"errorRate": "sum(errors)", "p99LatencySeconds": "sum(buckets)"}
    outcome = judge(Measurement(track(1000, 0), track(300, 300), None, queries=queries), CRITERIA)
    errors = next(m for m in outcome.metrics if m.name == "errorRate")
    assert errors.verdict == Verdict.FAIL
    assert errors.query == "sum(errors)"
    assert errors.threshold == 0.01
    assert errors.alpha == pytest.approx(0.005)  # 1% over two SLIs
    assert errors.e_value is not None
    assert errors.e_value >= 1 / 0.005
    assert errors.p_value == pytest.approx(1 / errors.e_value)
    assert "canary 300 of 300 pooled" in errors.statistic


@pytest.mark.parametrize(("drift_measured", "alpha"), [(False, 0.005), (True, 0.01 / 3)])
def test_alpha_is_split_over_the_slis(drift_measured: bool, alpha: float) -> None:
    sample = drift([0.01] * 30) if drift_measured else None
    outcome = judge(Measurement(track(1000), track(300), sample), CRITERIA)
    alphas = [m.alpha for m in outcome.metrics if m.name != "requests"]
    assert alphas == pytest.approx([alpha] * (3 if drift_measured else 2))


def test_evidence_from_earlier_steps_multiplies_this_steps() -> None:
    """Neither step alone is significant (the first holds: a breach with suggestive evidence); together they
    are, and the evidence says what to carry on."""
    stable, canary = track(2000, errors=10), track(400, errors=10)
    alone = judge(Measurement(stable, canary, None), CRITERIA)
    assert alone.verdict == Verdict.INCONCLUSIVE
    assert "holding: canary error rate 2.50%" in alone.message
    carried = dict(alone.evidence)
    assert 1 < carried["errorRate"] < 200
    together = judge(Measurement(stable, canary, None), CRITERIA, carried)
    assert together.verdict == Verdict.FAIL
    assert together.evidence["errorRate"] == pytest.approx(carried["errorRate"] ** 2)


def test_a_failed_query_keeps_the_evidence_as_it_was() -> None:
    carried = {"errorRate": 7.0, "drift": 2.0}
    outcome = judge(Measurement(track(None, None, None), track(None, None, None), None, "timeout"), CRITERIA, carried)
    assert outcome.verdict == Verdict.ERROR
    assert outcome.evidence == carried


def slow_tail(requests: int, slow: int) -> TrackSample:
    """Requests at 50-60 ms, but `slow` of them at 150 ms."""
    latencies = _spread(0.05, 0.06, requests - slow) + [0.15] * slow
    return TrackSample(requests=requests, errors=0, scraped=True, buckets=histogram(latencies))


@pytest.mark.parametrize(
    ("name", "stable", "canary", "sample", "verdict", "words"),
    [
        # 2.5% against 0.5%: over the cap and stable's, e between 1/sqrt(alpha) and 1/alpha: hold the step.
        (
            "errors-breach-suggestive",
            track(2000, errors=10),
            track(400, errors=10),
            None,
            Verdict.INCONCLUSIVE,
            "holding: canary error rate",
        ),
        # Over the cap and over stable by more than the allowed increase, but 3 errors are no evidence: pass.
        ("errors-breach-weak", track(2000, errors=10), track(200, errors=3), None, Verdict.PASS, "matches"),
        # A mean divergence over the limit, with evidence on the way: hold, never promote it.
        (
            "drift-breach-suggestive",
            track(1000),
            track(1000),
            [0.26] * 15,
            Verdict.INCONCLUSIVE,
            "holding: mean JS divergence",
        ),
        ("drift-breach-weak", track(1000), track(1000), [0.16] * 12, Verdict.PASS, "matches"),
        # A P99 over 1.25x stable's from 5 slow requests in 200: e=73, hold; from 3, e=3.8: pass.
        (
            "latency-breach-suggestive",
            track(1000),
            slow_tail(200, 5),
            None,
            Verdict.INCONCLUSIVE,
            "holding: canary P99",
        ),
        ("latency-breach-weak", track(1000), slow_tail(200, 3), None, Verdict.PASS, "matches"),
    ],
    ids=lambda value: value if isinstance(value, str) else "",
)
def test_a_breach_with_suggestive_evidence_holds_the_step(
    name: str, stable: TrackSample, canary: TrackSample, sample: list[float] | None, verdict: Verdict, words: str
) -> None:
    outcome = judge(Measurement(stable, canary, drift(sample) if sample else None), CRITERIA)
    assert outcome.verdict == verdict, outcome.message
    assert words in outcome.message


def answers(requests: int, **issues: int) -> TrackSample:
    """A track of `requests` generated choices, `issues` of them with each kind of content issue."""
    base = track(requests)
    content = {"all": float(requests)} | {kind: float(n) for kind, n in issues.items()}
    return TrackSample(base.requests, base.errors, base.buckets, base.scraped, content=content)


CONTENT_CASES = [
    ("the same as stable", answers(2000, truncated=1500), answers(400, truncated=300), Verdict.PASS, "no significant"),
    ("all empty", answers(2000, truncated=1500), answers(400, empty=400), Verdict.FAIL, "empty answers: canary 100"),
    # empty answers are found even though stable's answers are mostly cut: each kind is its own test
    ("some empty", answers(2000, truncated=1800), answers(400, truncated=300, empty=60), Verdict.FAIL, "empty"),
    ("garbled", answers(2000, undecodable=20), answers(400, undecodable=100), Verdict.FAIL, "undecodable"),
    ("broken JSON", answers(2000), answers(400, invalid_json=80), Verdict.FAIL, "invalid_json"),
    ("a little more, within the margin", answers(2000, empty=40), answers(400, empty=16), Verdict.PASS, "no signif"),
    ("few choices yet", answers(2000), answers(30, empty=1), Verdict.INCONCLUSIVE, "generated choices per track"),
    ("stable worse", answers(2000, empty=400), answers(400), Verdict.PASS, "no significant"),
]


@pytest.mark.parametrize(
    ("stable", "canary", "verdict", "words"), [c[1:] for c in CONTENT_CASES], ids=[c[0] for c in CONTENT_CASES]
)
def test_content_verdicts(stable: TrackSample, canary: TrackSample, verdict: Verdict, words: str) -> None:
    outcome = judge(Measurement(stable, canary, None, with_content=True), CRITERIA)
    content = next(m for m in outcome.metrics if m.name == "contentIssues")
    assert content.verdict == verdict, content.reason
    assert words in content.reason


def test_content_is_its_own_sli_with_its_share_of_alpha() -> None:
    outcome = judge(Measurement(answers(1000), answers(300), drift([0.01] * 30), with_content=True), CRITERIA)
    assert [m.name for m in outcome.metrics] == ["requests", "errorRate", "p99LatencySeconds", "drift", "contentIssues"]
    assert [m.alpha for m in outcome.metrics[1:]] == pytest.approx([0.01 / 4] * 4)
    assert outcome.verdict == Verdict.PASS
    assert "contentIssues" in outcome.evidence


def test_a_runtime_without_the_choices_counter_is_not_held_for_ever() -> None:
    stable, canary = (
        TrackSample(s.requests, s.errors, s.buckets, s.scraped, content={}) for s in (track(2000), track(400))
    )
    content = next(
        m
        for m in judge(Measurement(stable, canary, None, with_content=True), CRITERIA).metrics
        if m.name == "contentIssues"
    )
    assert content.verdict == Verdict.PASS
    assert content.reason.startswith("not measured")


def test_promql_counts_choices_by_outcome_for_user_generations() -> None:
    query = promql.choices("ns", "chat", ["a1", "b2"], 60)
    assert query == (
        'sum by (namespace, model_deployment, revision, outcome) (increase(modelship_choices_total{namespace="ns",'
        'model_deployment="chat",revision=~"a1|b2",endpoint=~"completions|chat_completions",source="user"}[60s]))'
    )


def runtime_of(server: str, **custom: Any) -> Runtime:
    """A valid runtime spec for `server`; a custom one serves on 8080, with `custom`'s fields."""
    if server == "custom":
        return Runtime.model_validate({"server": server, "image": "img", "custom": {"port": 8080, **custom}})
    return Runtime.model_validate({"server": server})


SERVED_BY = [
    # stable's server, the canary's, where the request SLIs come from, content measured
    ("modelship", "modelship", promql.RUNTIME, True),
    ("modelship", "vllm", promql.ROUTER, False),
    ("llamacpp", "modelship", promql.ROUTER, False),  # the other way round: stable has no runtime metrics
    ("custom", "custom", promql.ROUTER, False),
]


@pytest.mark.parametrize(("stable", "canary", "source", "content"), SERVED_BY)
def test_what_is_measured_follows_both_revisions_servers(
    stable: str, canary: str, source: promql.Source, content: bool
) -> None:
    spec = parse_spec({"model": {"uri": "pvc://models/m"}})
    servers = (stable, canary)
    assert metrics_sources(spec, (runtime_of(stable), runtime_of(canary))) == (source, source)
    assert content_measured(spec, servers) is content
    assert drift_measured(spec)  # the router's mirror probes compare any server's logprobs
    missing = unmeasured(spec, servers)
    assert (missing == {}) is content
    if not content:
        assert list(missing) == ["contentIssues"]
        assert f"runtime.server {next(s for s in servers if s != 'modelship')}" in missing["contentIssues"]
    embeddings = parse_spec({"model": {"uri": "pvc://m/e", "task": "embeddings"}})
    assert unmeasured(embeddings, servers) == {}  # embeddings have no content SLI, whatever serves them


BEHIND_A_GATEWAY = [
    # outside router mode each revision is read from its own server's metrics
    ("modelship", "modelship", (promql.RUNTIME, promql.RUNTIME)),
    ("vllm", "vllm", (promql.VLLM, promql.VLLM)),
    ("vllm", "modelship", (promql.VLLM, promql.RUNTIME)),  # migrating from vLLM to ModelShip's runtime
    ("llamacpp", "vllm", (promql.ROUTER, promql.VLLM)),  # stable from router mode: not scraped, so NoData
]


@pytest.mark.parametrize("mode", ["replicas", "gatewayAPI"])
@pytest.mark.parametrize(("stable", "canary", "sources"), BEHIND_A_GATEWAY)
def test_outside_router_mode_each_revision_is_read_from_its_own_servers_metrics(
    mode: str, stable: str, canary: str, sources: tuple[promql.Source, promql.Source]
) -> None:
    traffic: dict[str, Any] = {"mode": mode, "gateway": {"parentRefs": [{"name": "gw"}]}}
    if mode == "replicas":
        del traffic["gateway"]
    spec = parse_spec({"model": {"uri": "pvc://models/m"}, "runtime": {"server": canary}, "traffic": traffic})
    assert metrics_sources(spec, (runtime_of(stable), runtime_of(canary))) == sources
    assert not drift_measured(spec)  # no router, no mirror probes


HTTP_METRICS = {
    "requests": "http_requests_total",
    "requestsMatch": ['handler=~"/v1/(chat/)?completions"'],
    "serverErrorsMatch": ['status=~"5.."'],
    "latency": "http_request_duration_seconds",
    "latencyMatch": ['handler=~"/v1/(chat/)?completions"'],
}


def test_a_custom_server_that_names_its_metrics_is_read_from_them_outside_router_mode() -> None:
    custom = runtime_of("custom", metrics=HTTP_METRICS)
    spec = parse_spec({"model": {"uri": "pvc://models/m"}, "runtime": custom.to_api(), "traffic": {"mode": "replicas"}})
    stable, canary = metrics_sources(spec, (runtime_of("modelship"), custom))
    assert stable == promql.RUNTIME
    assert promql.errors("ns", "chat", ["c1"], 30, canary) == (
        'sum by (namespace, model_deployment, revision) (increase(http_requests_total{namespace="ns",'
        'model_deployment="chat",revision=~"c1",handler=~"/v1/(chat/)?completions",status=~"5.."}[30s]))'
    )
    assert promql.latency_buckets("ns", "chat", ["c1"], 30, canary) == (
        "sum by (namespace, model_deployment, revision, le) (increase(http_request_duration_seconds_bucket"
        '{namespace="ns",model_deployment="chat",revision=~"c1",handler=~"/v1/(chat/)?completions"}[30s]))'
    )
    # A failing scrape (up 0) is blindness, not a quiet revision.
    assert promql.scraped("ns", "chat", ["c1"], canary) == (
        'max by (namespace, model_deployment, revision) (up{namespace="ns",model_deployment="chat",revision=~"c1"})'
        " == 1"
    )
    # In router mode the router measures both, as for any server that is not ModelShip's runtime.
    routed = parse_spec({"model": {"uri": "pvc://models/m"}, "runtime": custom.to_api()})
    assert metrics_sources(routed, (custom, custom)) == (promql.ROUTER, promql.ROUTER)


def test_the_servers_the_spec_lets_out_of_router_mode_are_the_ones_with_mapped_metrics() -> None:
    assert set(METRICS_MAPPED) == set(promql.SERVER_SOURCES)


def test_the_look_queries_each_revision_from_its_own_source_in_one_union() -> None:
    look = Look("ns", "chat", "s1", "c1", 60, False, False, (promql.VLLM, promql.RUNTIME))
    stable_part = promql.requests("ns", "chat", ["s1"], 60, promql.VLLM)
    canary_part = promql.requests("ns", "chat", ["c1"], 60, promql.RUNTIME)
    assert look.queries()["requests"] == promql.union([stable_part, canary_part])
    assert "vllm:num_requests_running" in look.scraped_query()
    assert "modelship_model_ready" in look.scraped_query()
    same = Look("ns", "chat", "s1", "c1", 60, False, False, (promql.VLLM, promql.VLLM))
    assert same.queries()["errorRate"] == promql.errors("ns", "chat", ["s1", "c1"], 60, promql.VLLM)


def test_vllm_queries_select_its_routes_server_errors_and_engine_latency() -> None:
    assert promql.errors("ns", "chat", ["c1"], 30, promql.VLLM) == (
        'sum by (namespace, model_deployment, revision) (increase(http_requests_total{namespace="ns",'
        'model_deployment="chat",revision=~"c1",handler=~"/v1/completions|/v1/chat/completions|/v1/embeddings",'
        'status="5xx"}[30s]))'
    )
    assert promql.latency_buckets("ns", "chat", ["c1"], 30, promql.VLLM) == (
        "sum by (namespace, model_deployment, revision, le) (increase(vllm:e2e_request_latency_seconds_bucket"
        '{namespace="ns",model_deployment="chat",revision=~"c1"}[30s]))'
    )


@pytest.mark.parametrize("fault", [None, "errors"])
def test_not_measured_slis_are_shown_beside_the_verdict_the_measured_ones_give(fault: str | None) -> None:
    stable = TrackSample(5000, 10, ((0.5, 4900), (1.0, 5000), (math.inf, 5000)), scraped=True)
    canary_errors = 400 if fault else 10
    canary = TrackSample(5000, canary_errors, ((0.5, 4900), (1.0, 5000), (math.inf, 5000)), scraped=True)
    reason = {"contentIssues": "not measured: runtime.server llamacpp does not count empty answers"}
    outcome = judge(Measurement(stable, canary, None), CRITERIA, None, reason)
    shown = {m.name: m for m in outcome.metrics}
    assert shown["contentIssues"].verdict == Verdict.NOT_MEASURED
    assert shown["contentIssues"].reason == reason["contentIssues"]
    assert outcome.verdict == (Verdict.FAIL if fault else Verdict.PASS)
    alone = judge(Measurement(stable, canary, None), CRITERIA, None)
    assert outcome.verdict == alone.verdict  # the same evidence, the same alpha: not one test more or less
    assert outcome.evidence == alone.evidence
