"""Judging a canary against stable from one measurement: a verdict per SLI and one overall.

The method (derivations, assumptions and worked examples in docs/analysis.md):

* Both tracks are measured by the same queries over the same window, the time since the current step
  started: counts are cumulative, so evidence accumulates over the step.
* Every test is an always-valid e-value (model_operator.sequential): the analysis looks after every
  interval, and over all those looks a good canary fails a test with probability at most that test's
  alpha. Each step's e-value multiplies the one the earlier steps ended with (status.carriedEvidence), so
  a test is one e-process over the whole rollout; 1 - confidence is split evenly over the SLIs (errors,
  latency and, when measured, drift and content), so P(a good canary is rolled back over a rollout) <= 1 - confidence.
* Canary against stable is a two-sample test conditioned on the pooled count: under "the canary is no
  worse", each failed (or slow) request of either track is the canary's with probability equal to the
  canary's share of requests, whatever stable's own rate is and however it moves (a stall that slows both
  tracks adds events to both in proportion). Stable's rate is never taken as exact.
* A canary fails an SLI only when it is significantly worse than stable AND either significantly over the
  absolute cap (one-sample e-value) or worse by more than the allowed margin (maxErrorRateIncrease, or a
  P99 over maxLatencyRatio x stable's and the noise floor). Both routes need the two-sample rejection, so
  the SLI spends one alpha; an outage that hits stable as hard is not the canary's fault.
* Slow requests are counted above the same bucket bound for both tracks, at every bound of the histogram
  (the SLI's alpha split over the bounds), so no bound is picked from the data being judged.
* Drift: H0 "the mean divergence of canary from stable on greedy mirrored prompts is at most the drift
  threshold", by betting on the divergence histogram; it passes with MIN_DRIFT_COMPARISONS comparisons.
* Content: every generated choice is counted by what its content is (empty, undecodable, invalid JSON
  when JSON was asked for, cut by max_tokens, or ok); each kind is a two-sample test as above, and the
  SLI's e-value is their average (judge_content).
* A step passes only when every SLI passes with `minRequests` on both tracks. Query errors give Error and
  absent series give NoData: monitoring blindness is not regression, and the rollout engine holds.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field

from model_runtime.contract import CHOICES_TOTAL, CONTENT_ISSUES, OUTCOME_ALL

from . import promql
from .api.spec import ModelDeploymentSpec, Runtime, Thresholds
from .api.status import MetricResult, Verdict
from .sequential import mean_e_value, p_value, share_e_value

MIN_DRIFT_COMPARISONS = 10
TAIL = 0.01  # the share of requests above a P99

Buckets = tuple[tuple[float, float], ...]  # (upper bound "le", cumulative count), +Inf last


@dataclass(frozen=True)
class TrackSample:
    """One track over the window; None where the series does not exist."""

    requests: float | None
    errors: float | None
    buckets: Buckets | None
    scraped: bool
    content: Mapping[str, float] | None = None  # generated choices by content outcome; None: not measured

    @property
    def p99_seconds(self) -> float | None:
        return quantile(0.99, self.buckets) if self.buckets else None


@dataclass(frozen=True)
class DriftSample:
    """The canary's output divergence from stable on mirrored prompts: a cumulative histogram over 0..1."""

    comparisons: float
    mean: float | None
    buckets: Buckets = ()


@dataclass(frozen=True)
class Measurement:
    stable: TrackSample
    canary: TrackSample
    drift: DriftSample | None  # None when drift is not measured (no router, mirroring off, embeddings)
    query_error: str | None = None
    with_content: bool = False  # the content SLI is measured (text generation)
    queries: Mapping[str, str] = field(default_factory=dict)  # SLI name -> the PromQL that measured it


@dataclass(frozen=True)
class Criteria:
    thresholds: Thresholds
    min_requests: int
    confidence: float

    def alpha(self, tests: int) -> float:
        """What one SLI's test may spend over the whole rollout."""
        return (1.0 - self.confidence) / max(1, tests)


def criteria_for(spec: ModelDeploymentSpec) -> Criteria:
    analysis = spec.rollout.analysis
    return Criteria(analysis.thresholds, analysis.min_requests, analysis.confidence)


def drift_measured(spec: ModelDeploymentSpec) -> bool:
    """Drift needs the router's mirror probes, which compare next-token distributions of generated text."""
    return spec.traffic.mode == "router" and spec.traffic.mirror_percent > 0 and spec.model.task == "text-generation"


OWN_SERVER = ("modelship",)


def content_measured(spec: ModelDeploymentSpec, servers: Collection[str] = OWN_SERVER) -> bool:
    """The content SLI counts generated choices: every text-generation model has them, embeddings none;
    only ModelShip's runtime looks at what it generated, so both revisions (`servers`: stable's and the
    canary's) must run it."""
    return spec.model.task == "text-generation" and set(servers) == {"modelship"}


def metrics_sources(
    spec: ModelDeploymentSpec, runtimes: tuple[Runtime, Runtime] | None = None
) -> tuple[promql.Source, promql.Source]:
    """Where each revision's (`runtimes`: stable's and the canary's, the spec's own for both when None)
    request SLIs are read. In router mode, when either runs another server than ModelShip's runtime, both
    are measured by the router in front of them, so canary and stable mean the same whatever each runs.
    Otherwise each is read from its own server's metrics (promql.own_source); a server without a mapping
    (the spec's rules keep llama.cpp, and custom images that name no metrics, to router mode) falls back
    to the router's, which then say it is not scraped."""
    stable, canary = runtimes or (spec.runtime, spec.runtime)
    if spec.traffic.mode == "router" and {stable.server, canary.server} != {"modelship"}:
        return promql.ROUTER, promql.ROUTER
    return promql.own_source(stable) or promql.ROUTER, promql.own_source(canary) or promql.ROUTER


def unmeasured(spec: ModelDeploymentSpec, servers: Collection[str] = OWN_SERVER) -> dict[str, str]:
    """The SLIs the revisions' servers cannot give, with why: reported as NotMeasured rather than passing."""
    others = sorted(set(servers) - {"modelship"})
    if spec.model.task == "text-generation" and others:
        return {
            "contentIssues": f"not measured: runtime.server {', '.join(others)} does not count empty, cut,"
            " undecodable or invalid-JSON answers"
        }
    return {}


@dataclass(frozen=True)
class Outcome:
    verdict: Verdict
    message: str
    metrics: tuple[MetricResult, ...]
    evidence: Mapping[str, float] = field(default_factory=dict)  # test -> e-value over the rollout so far

    @property
    def enough_requests(self) -> bool:
        return any(m.name == "requests" and m.verdict == Verdict.PASS for m in self.metrics)


def quantile(q: float, buckets: Buckets) -> float | None:
    """Prometheus' histogram_quantile over cumulative buckets: linear interpolation inside the bucket
    holding the rank; the highest finite bound when the rank falls in +Inf."""
    ordered = sorted((le, count) for le, count in buckets if not math.isnan(count))
    if not ordered or not math.isinf(ordered[-1][0]):
        return None
    total = ordered[-1][1]
    if total <= 0:
        return None
    rank = q * total
    lower_bound, lower_count = 0.0, 0.0
    for upper_bound, count in ordered:
        if count >= rank:
            if math.isinf(upper_bound):
                return lower_bound
            if count == lower_count:
                return upper_bound
            return lower_bound + (upper_bound - lower_bound) * (rank - lower_count) / (count - lower_count)
        lower_bound, lower_count = upper_bound, count
    return lower_bound


def bound_at_or_above(limit: float, buckets: Buckets) -> float | None:
    """The smallest finite bucket bound >= `limit`: requests above it are certainly slower than `limit`."""
    return next((le for le, _ in sorted(buckets) if le >= limit and not math.isinf(le)), None)


def count_above(bound: float, buckets: Buckets) -> int:
    """Requests slower than the bucket bound `bound` (one of the histogram's own bounds)."""
    ordered = sorted(buckets)
    if not ordered:
        return 0
    total = ordered[-1][1]
    at_or_below = next((count for le, count in ordered if le >= bound), total)
    return max(0, round(total - at_or_below))


def pooled(a: Buckets | None, b: Buckets | None) -> Buckets:
    counts: dict[float, float] = {}
    for buckets in (a or (), b or ()):
        for le, count in buckets:
            counts[le] = counts.get(le, 0.0) + (0.0 if math.isnan(count) else count)
    return tuple(sorted(counts.items()))


def _count(value: float | None) -> int:
    return 0 if value is None or math.isnan(value) else max(0, round(value))


def _finite(value: float | None) -> float | None:
    return None if value is None or math.isnan(value) or math.isinf(value) else value


def _total(buckets: Buckets | None) -> int:
    return _count(max((count for _, count in buckets), default=0.0)) if buckets else 0


@dataclass(frozen=True)
class Comparison:
    """The two-sample test: is the canary's share of the pooled events above its share of requests?"""

    canary_events: int
    stable_events: int
    share: float  # the canary's share of requests
    e_value: float

    @classmethod
    def of(cls, canary_events: int, canary_requests: int, stable_events: int, stable_requests: int) -> Comparison:
        trials = canary_requests + stable_requests
        share = canary_requests / trials if trials else 1.0
        events = canary_events + stable_events
        return cls(canary_events, stable_events, share, share_e_value(canary_events, events, share))

    def describe(self) -> str:
        return (
            f"canary {self.canary_events} of {self.canary_events + self.stable_events} pooled "
            f"at a {self.share:.1%} request share"
        )


Evidence = dict[str, float]  # test -> e-value over the rollout so far


def _finite_e(value: float) -> float:
    return value if math.isfinite(value) else 1e300


def _evidence(result: MetricResult, e_value: float, alpha: float, threshold: float | None) -> MetricResult:
    return result.model_copy(
        update={"e_value": _finite_e(e_value), "p_value": p_value(e_value), "alpha": alpha, "threshold": threshold}
    )


def suggestive(e_value: float, alpha: float) -> bool:
    """Halfway to significance on the log scale (e >= 1/sqrt(alpha)). A breach seen with such evidence holds
    the step rather than let it pass: a bad canary's evidence keeps growing and rolls it back, while a good
    canary's e-value reaches this at all with probability at most sqrt(alpha) (Ville) and then decays, so
    holds are rare and short for good canaries and never roll one back."""
    return e_value >= 1.0 / math.sqrt(alpha)


def judge_requests(stable: TrackSample, canary: TrackSample, min_requests: int) -> MetricResult:
    n_s, n_c = _count(stable.requests), _count(canary.requests)
    enough = n_s >= min_requests and n_c >= min_requests
    return MetricResult(
        name="requests",
        canary=n_c,
        stable=n_s,
        canary_samples=n_c,
        stable_samples=n_s,
        verdict=Verdict.PASS if enough else Verdict.INCONCLUSIVE,
        threshold=min_requests,
        reason="enough requests on both tracks"
        if enough
        else f"waiting for {min_requests} requests per track (canary {n_c}, stable {n_s})",
    )


def judge_errors(
    stable: TrackSample, canary: TrackSample, criteria: Criteria, alpha: float, carried: Mapping[str, float]
) -> tuple[MetricResult, Evidence]:
    n_s, n_c = _count(stable.requests), _count(canary.requests)
    e_s, e_c = min(_count(stable.errors), n_s), min(_count(canary.errors), n_c)
    rate_s = e_s / n_s if n_s else None
    rate_c = e_c / n_c if n_c else None
    limits = criteria.thresholds
    against_stable = Comparison.of(e_c, n_c, e_s, n_s)
    worse = carried.get("errorRate", 1.0) * against_stable.e_value
    over_cap = carried.get("errorRateCap", 1.0) * share_e_value(e_c, n_c, limits.error_rate)
    evidence = {"errorRate": _finite_e(worse), "errorRateCap": _finite_e(over_cap)}
    result = _evidence(
        MetricResult(
            name="errorRate",
            canary=rate_c,
            stable=rate_s,
            canary_samples=n_c,
            stable_samples=n_s,
            verdict=Verdict.PASS,
            statistic=f"{against_stable.describe()}; over the cap: e={over_cap:.3g}",
        ),
        worse,
        alpha,
        limits.error_rate,
    )
    if n_c and worse >= 1.0 / alpha:
        shown = f"stable {(rate_s or 0):.2%}, e={worse:.3g} >= {1 / alpha:.0f}"
        if over_cap >= 1.0 / alpha:
            return result.model_copy(
                update={
                    "verdict": Verdict.FAIL,
                    "reason": f"canary error rate {rate_c:.2%} is above the {limits.error_rate:.2%} cap and "
                    f"significantly above stable's ({shown})",
                }
            ), evidence
        if rate_c is not None and rate_s is not None and rate_c - rate_s > limits.max_error_rate_increase:
            return result.model_copy(
                update={
                    "verdict": Verdict.FAIL,
                    "reason": f"canary error rate {rate_c:.2%} is significantly above stable's, by more than "
                    f"{limits.max_error_rate_increase:.2%} ({shown})",
                }
            ), evidence
    if n_c < criteria.min_requests or n_s < criteria.min_requests:
        return result.model_copy(
            update={"verdict": Verdict.INCONCLUSIVE, "reason": "not enough requests yet"}
        ), evidence
    if (
        rate_c is not None
        and rate_s is not None
        and rate_c > limits.error_rate
        and rate_c - rate_s > limits.max_error_rate_increase
        and suggestive(worse, alpha)
    ):
        return result.model_copy(
            update={
                "verdict": Verdict.INCONCLUSIVE,
                "reason": f"holding: canary error rate {rate_c:.2%} is over the cap and stable's {rate_s:.2%}, "
                f"not significantly yet (e={worse:.3g} of {1 / alpha:.0f})",
            }
        ), evidence
    return result.model_copy(update={"reason": "no significant increase in errors"}), evidence


def _above_each_bound(bounds: list[float], buckets: Buckets | None) -> list[int]:
    """Requests above each of `bounds` (rising), in one pass over a cumulative histogram."""
    ordered = sorted(buckets or ())
    if not ordered:
        return [0] * len(bounds)
    total, out, index, at_or_below = ordered[-1][1], [], 0, 0.0
    for bound in bounds:
        while index < len(ordered) and ordered[index][0] <= bound:
            at_or_below = ordered[index][1]
            index += 1
        out.append(max(0, round(total - at_or_below)))
    return out


@dataclass(frozen=True)
class SlowRequests:
    """The two-sample test of slow requests at every finite bound of the histogram."""

    tested: int  # how many bounds
    e_value: float  # the average of the bounds' e-values
    strongest: tuple[float, Comparison] | None  # the bound with the most evidence, to show


def slowest_comparison(stable: TrackSample, canary: TrackSample) -> SlowRequests:
    """Slow requests of both tracks counted above the same bound, at every finite bound of the histogram.
    Testing every bound, rather than one picked from the data, keeps each test's null distribution exact;
    their average is an e-value for "the canary is nowhere slower" and stays one under repeated looks (an
    average of supermartingales), at a cost of at most log(bounds) against the best bound alone."""
    bounds = sorted({le for le, _ in pooled(stable.buckets, canary.buckets) if math.isfinite(le)})
    if not bounds:
        return SlowRequests(1, 1.0, None)
    h_c, h_s = _total(canary.buckets), _total(stable.buckets)
    total, best = 0.0, None
    for bound, events_c, events_s in zip(
        bounds, _above_each_bound(bounds, canary.buckets), _above_each_bound(bounds, stable.buckets), strict=True
    ):
        comparison = Comparison.of(events_c, h_c, events_s, h_s)
        total += comparison.e_value
        if events_c and (best is None or comparison.e_value > best[1].e_value):
            best = (bound, comparison)
    return SlowRequests(len(bounds), total / len(bounds), best)


def allowed_p99(stable_p99: float, limits: Thresholds) -> float:
    """The canary P99 stable's allows: maxLatencyRatio times it, and never less than the noise floor above."""
    return max(stable_p99 * limits.max_latency_ratio, stable_p99 + limits.latency_noise_floor_seconds)


def judge_latency(
    stable: TrackSample, canary: TrackSample, criteria: Criteria, alpha: float, carried: Mapping[str, float]
) -> tuple[MetricResult, Evidence]:
    n_s, n_c = _count(stable.requests), _count(canary.requests)
    p_s, p_c = _finite(stable.p99_seconds), _finite(canary.p99_seconds)
    limits = criteria.thresholds
    result = MetricResult(
        name="p99LatencySeconds",
        canary=p_c,
        stable=p_s,
        canary_samples=n_c,
        stable_samples=n_s,
        verdict=Verdict.INCONCLUSIVE,
        threshold=limits.p99_latency_seconds,
    )
    carried_slower = carried.get("p99LatencySeconds", 1.0)
    carried_cap = carried.get("p99LatencySecondsCap", 1.0)
    if p_c is None or canary.buckets is None:
        evidence = {"p99LatencySeconds": carried_slower, "p99LatencySecondsCap": carried_cap}
        return result.model_copy(update={"reason": "no latency histogram for the canary yet"}), evidence
    slow = slowest_comparison(stable, canary)
    tested, strongest = slow.tested, slow.strongest
    slower = carried_slower * slow.e_value
    h_c = _total(canary.buckets)
    cap_bound = bound_at_or_above(limits.p99_latency_seconds, canary.buckets)
    over_cap_slow = count_above(cap_bound, canary.buckets) if cap_bound is not None else 0
    over_cap = carried_cap * (share_e_value(over_cap_slow, h_c, TAIL) if cap_bound is not None else 1.0)
    evidence = {"p99LatencySeconds": _finite_e(slower), "p99LatencySecondsCap": _finite_e(over_cap)}
    described = (
        f"strongest at {strongest[0] * 1000:.0f}ms: {strongest[1].describe()} (of {tested} bounds)"
        if strongest
        else "no request above any bound"
    )
    result = _evidence(
        result.model_copy(
            update={"statistic": f"{described}; {over_cap_slow} of {h_c} over the cap, e={over_cap:.3g}"}
        ),
        slower,
        alpha,
        limits.p99_latency_seconds,
    )
    if strongest is not None and slower >= 1.0 / alpha:
        bound, comparison = strongest
        shown = (
            f"{comparison.canary_events} vs {comparison.stable_events} requests slower than {bound * 1000:.0f}ms "
            f"at a {comparison.share:.0%} share, e={slower:.3g} >= {1 / alpha:.0f}"
        )
        if p_c > limits.p99_latency_seconds and over_cap >= 1.0 / alpha:
            return result.model_copy(
                update={
                    "verdict": Verdict.FAIL,
                    "reason": f"canary P99 {p_c * 1000:.0f}ms is above the {limits.p99_latency_seconds * 1000:.0f}ms "
                    f"cap and significantly slower than stable's {(p_s or 0) * 1000:.0f}ms ({shown})",
                }
            ), evidence
        if p_s is not None:
            allowed = allowed_p99(p_s, limits)
            if p_c > allowed:
                return result.model_copy(
                    update={
                        "verdict": Verdict.FAIL,
                        "threshold": allowed,
                        "reason": f"canary P99 {p_c * 1000:.0f}ms is over {limits.max_latency_ratio:g}x stable's "
                        f"{p_s * 1000:.0f}ms and the {limits.latency_noise_floor_seconds * 1000:.0f}ms noise floor, "
                        f"and significantly slower ({shown})",
                    }
                ), evidence
    if n_c < criteria.min_requests or n_s < criteria.min_requests:
        return result.model_copy(update={"reason": "a P99 passes only with minRequests on both tracks"}), evidence
    if p_s is None:
        return result.model_copy(update={"reason": "no latency histogram for stable"}), evidence
    allowed = allowed_p99(p_s, limits)
    if p_c > allowed and suggestive(slower, alpha):
        return result.model_copy(
            update={
                "threshold": allowed,
                "reason": f"holding: canary P99 {p_c * 1000:.0f}ms is over {limits.max_latency_ratio:g}x stable's "
                f"{p_s * 1000:.0f}ms, not significantly yet (e={slower:.3g} of {1 / alpha:.0f})",
            }
        ), evidence
    return result.model_copy(update={"verdict": Verdict.PASS, "reason": "no significant slowdown"}), evidence


def lower_bounds(buckets: Buckets) -> tuple[tuple[float, float], ...]:
    """A cumulative histogram as (lower bound, count) per bucket."""
    out, previous_bound, previous_count = [], 0.0, 0.0
    for le, count in sorted(buckets):
        out.append((previous_bound, max(0.0, count - previous_count)))
        previous_bound, previous_count = (le if math.isfinite(le) else previous_bound), count
    return tuple(out)


def judge_drift(
    drift: DriftSample, criteria: Criteria, alpha: float, carried: Mapping[str, float]
) -> tuple[MetricResult, Evidence]:
    count = _count(drift.comparisons)
    mean = _finite(drift.mean)
    limit = criteria.thresholds.drift
    e_value = carried.get("drift", 1.0) * (mean_e_value(lower_bounds(drift.buckets), limit) if drift.buckets else 1.0)
    result = _evidence(
        MetricResult(
            name="drift",
            canary=mean,
            stable=0.0,
            canary_samples=count,
            stable_samples=count,
            verdict=Verdict.INCONCLUSIVE,
            statistic=f"{count} mirrored comparisons, mean JS divergence {'-' if mean is None else f'{mean:.3f}'}",
        ),
        e_value,
        alpha,
        limit,
    )
    evidence = {"drift": _finite_e(e_value)}
    if e_value >= 1.0 / alpha and mean is not None and count >= MIN_DRIFT_COMPARISONS:
        return result.model_copy(
            update={
                "verdict": Verdict.FAIL,
                "reason": f"canary answers diverge from stable's: mean JS divergence {mean:.3f}, significantly above "
                f"{limit:g} over {count} comparisons (e={e_value:.3g} >= {1 / alpha:.0f})",
            }
        ), evidence
    if count < MIN_DRIFT_COMPARISONS or mean is None:
        return result.model_copy(
            update={"reason": f"{count} of {MIN_DRIFT_COMPARISONS} mirrored comparisons"}
        ), evidence
    if mean > limit and suggestive(e_value, alpha):
        return result.model_copy(
            update={
                "reason": f"holding: mean JS divergence {mean:.3f} is over {limit:g}, not significantly yet "
                f"(e={e_value:.3g} of {1 / alpha:.0f})"
            }
        ), evidence
    return result.model_copy(update={"verdict": Verdict.PASS, "reason": f"mean JS divergence {mean:.3f}"}), evidence


def judge_content(
    stable: TrackSample, canary: TrackSample, criteria: Criteria, alpha: float, carried: Mapping[str, float]
) -> tuple[MetricResult, Evidence]:
    """Each kind of content issue is a two-sample test of its own (the canary's share of that kind's pooled
    choices against its share of all choices), and the SLI's e-value is their average: an e-value for "the
    canary is no worse on any kind" whatever the kinds' dependence, at a cost of at most log(kinds) against
    the one kind that regressed. It fails only when that evidence is significant and some kind's rate is
    above stable's by more than maxContentIssueIncrease."""
    counts_c, counts_s = canary.content or {}, stable.content or {}
    n_c, n_s = _count(counts_c.get(OUTCOME_ALL)), _count(counts_s.get(OUTCOME_ALL))
    margin = criteria.thresholds.max_content_issue_increase
    comparisons = {
        kind: Comparison.of(min(_count(counts_c.get(kind)), n_c), n_c, min(_count(counts_s.get(kind)), n_s), n_s)
        for kind in CONTENT_ISSUES
    }
    e_value = carried.get("contentIssues", 1.0) * sum(c.e_value for c in comparisons.values()) / len(comparisons)
    evidence = {"contentIssues": _finite_e(e_value)}

    def rate(events: int, total: int) -> float | None:
        return events / total if total else None

    increases = {
        kind: (rate(c.canary_events, n_c) or 0.0) - (rate(c.stable_events, n_s) or 0.0)
        for kind, c in comparisons.items()
    }
    worst = max(CONTENT_ISSUES, key=lambda kind: (increases[kind], comparisons[kind].e_value))
    rate_c, rate_s = rate(comparisons[worst].canary_events, n_c), rate(comparisons[worst].stable_events, n_s)
    shares = ", ".join(
        f"{kind} {comparisons[kind].canary_events} vs {comparisons[kind].stable_events}" for kind in CONTENT_ISSUES
    )
    result = _evidence(
        MetricResult(
            name="contentIssues",
            canary=rate_c,
            stable=rate_s,
            canary_samples=n_c,
            stable_samples=n_s,
            verdict=Verdict.INCONCLUSIVE,
            statistic=f"choices with content issues, canary vs stable of {n_c} and {n_s}: {shares}; "
            f"largest increase: {worst}",
        ),
        e_value,
        alpha,
        margin,
    )
    described = f"{worst} answers: canary {(rate_c or 0):.2%}, stable {(rate_s or 0):.2%}"
    if e_value >= 1.0 / alpha and increases[worst] > margin:
        return result.model_copy(
            update={
                "verdict": Verdict.FAIL,
                "reason": f"canary gives significantly more {described}, more than {margin:.0%} above stable's "
                f"(e={e_value:.3g} >= {1 / alpha:.0f})",
            }
        ), evidence
    if not n_c and not n_s and min(_count(canary.requests), _count(stable.requests)) >= criteria.min_requests:
        # Requests enough, and not one choice counted on either track: a runtime that does not export the
        # counter. Said so, not held for ever.
        return result.model_copy(
            update={"verdict": Verdict.PASS, "reason": f"not measured: neither revision exports {CHOICES_TOTAL}"}
        ), evidence
    if n_c < criteria.min_requests or n_s < criteria.min_requests:
        return result.model_copy(
            update={"reason": f"waiting for {criteria.min_requests} generated choices per track"}
        ), evidence
    if increases[worst] > margin and suggestive(e_value, alpha):
        return result.model_copy(
            update={"reason": f"holding: {described}, not significantly yet (e={e_value:.3g} of {1 / alpha:.0f})"}
        ), evidence
    return result.model_copy(
        update={"verdict": Verdict.PASS, "reason": "no significant increase in content issues"}
    ), evidence


def judge(
    measurement: Measurement,
    criteria: Criteria,
    carried: Mapping[str, float] | None = None,
    not_measured: Mapping[str, str] | None = None,
) -> Outcome:
    """The verdict of one analysis, with `carried` the e-values the canary's earlier steps ended with and
    `not_measured` the SLIs its server cannot give (`unmeasured`). Fail wins over everything: significant
    evidence is acted on even when another query failed; then Error (a query failed), NoData (a track is
    not scraped), Inconclusive, Pass."""
    stable, canary = measurement.stable, measurement.canary
    earlier = carried or {}
    tests = 2 + (measurement.drift is not None) + measurement.with_content
    alpha = criteria.alpha(tests)
    errors, error_evidence = judge_errors(stable, canary, criteria, alpha, earlier)
    latency, latency_evidence = judge_latency(stable, canary, criteria, alpha, earlier)
    metrics = [judge_requests(stable, canary, criteria.min_requests), errors, latency]
    evidence = error_evidence | latency_evidence
    if measurement.drift is not None:
        drift, drift_evidence = judge_drift(measurement.drift, criteria, alpha, earlier)
        metrics.append(drift)
        evidence |= drift_evidence
    if measurement.with_content:
        content, content_evidence = judge_content(stable, canary, criteria, alpha, earlier)
        metrics.append(content)
        evidence |= content_evidence
    metrics = [
        m.model_copy(update={"query": measurement.queries[m.name]}) if m.name in measurement.queries else m
        for m in metrics
    ]
    shown = metrics + [
        MetricResult(name=sli, verdict=Verdict.NOT_MEASURED, reason=why) for sli, why in (not_measured or {}).items()
    ]
    failed = [m for m in metrics if m.verdict == Verdict.FAIL]
    if failed:
        return Outcome(Verdict.FAIL, "; ".join(m.reason for m in failed), tuple(shown), evidence)
    if measurement.query_error:
        # A failed query measured nothing: the evidence stays what it was.
        return Outcome(
            Verdict.ERROR, f"Prometheus query failed: {measurement.query_error}", tuple(shown), dict(earlier)
        )
    blind = [track for track, sample in (("canary", canary), ("stable", stable)) if not sample.scraped]
    if blind:
        return Outcome(
            Verdict.NO_DATA, f"Prometheus has no metrics for the {' and '.join(blind)} track", tuple(shown), evidence
        )
    waiting = [m for m in metrics if m.verdict != Verdict.PASS]
    if waiting:
        return Outcome(Verdict.INCONCLUSIVE, "; ".join(m.reason for m in waiting), tuple(shown), evidence)
    return Outcome(Verdict.PASS, "canary matches stable on every SLI", tuple(shown), evidence)
