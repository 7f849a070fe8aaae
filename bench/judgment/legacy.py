"""The analysis this project used before the e-values (model_operator/analysis.py at ea2cae7), kept only as
the judgment benchmark's baseline. Not product code: do not import it outside bench/.

Judging a canary against stable from one measurement: a verdict per SLI and one overall.

The method (also in docs/analysis.md):

* Both tracks are measured by the same queries over the same window: the time since the current step
  started. Counts are cumulative over that window, not per-interval samples, so evidence accumulates and
  a noisy interval cannot fail a step on its own.
* A canary fails only on evidence that it is worse than stable over the same window. Slow or failed
  requests come in bursts (a node stalls, a dependency fails) that hit both tracks at once; judged alone,
  two requests caught in a shared stall would "prove" a regression. So every test's null hypothesis takes
  stable's own rate (Laplace-smoothed, so a stable with no failures yet is not assumed perfect) as the
  baseline, and the absolute caps are judged against max(cap, stable's rate).
* Errors: a one-sided exact binomial test. Under the null hypothesis the canary's error probability is at
  most `p0`; the step fails early, with any number of requests, once P(X >= observed errors | n, p0) falls
  below 1 - confidence. It runs twice: relative (p0 = stable's rate + maxErrorRateIncrease) and absolute
  (p0 = max(errorRate cap, stable's rate)).
* Latency: P99 from the request-duration histograms (the same interpolation as histogram_quantile). A P99
  of a few requests is their maximum and bucket bounds make it jumpy, so a P99 over its limit is not
  evidence by itself: the canary fails when its P99 exceeds the limit (stable's P99 times the ratio, at
  least stable's plus the noise floor; or the absolute cap) AND the number of canary requests certainly
  slower than that limit is significantly more than max(1%, stable's share above the same limit) (the
  same one-sided binomial test). It passes only with `minRequests` on both tracks.
* Drift: mean Jensen-Shannon divergence of canary vs stable next-token distributions on mirrored prompts,
  judged once there are MIN_DRIFT_COMPARISONS comparisons.
* A step passes only when every SLI passes with `minRequests` on both tracks. Query errors give Error and
  absent series give NoData: monitoring blindness is not regression, and the rollout engine holds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from model_operator.api.spec import Thresholds
from model_operator.api.status import MetricResult, Verdict

MIN_DRIFT_COMPARISONS = 10
EXACT_LIMIT = 20_000


Buckets = tuple[tuple[float, float], ...]  # (upper bound "le", cumulative count), +Inf last


@dataclass(frozen=True)
class TrackSample:
    """One track over the window; None where the series does not exist."""

    requests: float | None
    errors: float | None
    buckets: Buckets | None
    scraped: bool

    @property
    def p99_seconds(self) -> float | None:
        return quantile(0.99, self.buckets) if self.buckets else None


@dataclass(frozen=True)
class DriftSample:
    comparisons: float
    mean: float | None


@dataclass(frozen=True)
class Measurement:
    stable: TrackSample
    canary: TrackSample
    drift: DriftSample | None  # None when drift is not measured (no router, mirroring off, embeddings)
    query_error: str | None = None


@dataclass(frozen=True)
class Criteria:
    thresholds: Thresholds
    min_requests: int
    confidence: float


@dataclass(frozen=True)
class Outcome:
    verdict: Verdict
    message: str
    metrics: tuple[MetricResult, ...]

    @property
    def enough_requests(self) -> bool:
        return any(m.name == "requests" and m.verdict == Verdict.PASS for m in self.metrics)


def binomial_tail(k: int, n: int, p: float) -> float:
    """P(X >= k) for X ~ Binomial(n, p): exact below EXACT_LIMIT trials, normal approximation above."""
    if k <= 0:
        return 1.0
    if k > n:
        return 0.0
    if p <= 0.0:
        return 0.0
    if p >= 1.0:
        return 1.0
    if n > EXACT_LIMIT:
        mean, sd = n * p, math.sqrt(n * p * (1 - p))
        return 0.5 * math.erfc((k - 0.5 - mean) / (sd * math.sqrt(2)))
    log_p, log_q = math.log(p), math.log1p(-p)
    terms = [
        math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) + i * log_p + (n - i) * log_q
        for i in range(k, n + 1)
    ]
    top = max(terms)
    return min(1.0, math.exp(top) * sum(math.exp(t - top) for t in terms))


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


def slower_than(limit: float, buckets: Buckets) -> int:
    """Requests certainly slower than `limit`: those above the smallest bucket bound at or over it."""
    ordered = sorted(buckets)
    if not ordered:
        return 0
    total = ordered[-1][1]
    at_or_below = next((count for le, count in ordered if le >= limit), total)
    return max(0, round(total - at_or_below))


def _count(value: float | None) -> int:
    return 0 if value is None or math.isnan(value) else max(0, round(value))


def _finite(value: float | None) -> float | None:
    return None if value is None or math.isnan(value) or math.isinf(value) else value


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
        reason="enough requests on both tracks"
        if enough
        else f"waiting for {min_requests} requests per track (canary {n_c}, stable {n_s})",
    )


def judge_errors(stable: TrackSample, canary: TrackSample, criteria: Criteria) -> MetricResult:
    n_s, n_c = _count(stable.requests), _count(canary.requests)
    e_s, e_c = min(_count(stable.errors), n_s), min(_count(canary.errors), n_c)
    rate_s = e_s / n_s if n_s else None
    rate_c = e_c / n_c if n_c else None
    alpha = 1.0 - criteria.confidence
    smoothed_stable = (e_s + 1) / (n_s + 2)
    relative_p0 = min(1.0, smoothed_stable + criteria.thresholds.max_error_rate_increase)
    cap_p0 = min(1.0, max(criteria.thresholds.error_rate, smoothed_stable))
    relative = binomial_tail(e_c, n_c, relative_p0)
    capped = binomial_tail(e_c, n_c, cap_p0)
    result = MetricResult(
        name="errorRate",
        canary=rate_c,
        stable=rate_s,
        canary_samples=n_c,
        stable_samples=n_s,
        verdict=Verdict.PASS,
        reason="",
    )
    if n_c and capped < alpha:
        return result.model_copy(
            update={
                "verdict": Verdict.FAIL,
                "reason": (
                    f"canary error rate {rate_c:.2%} is above the {criteria.thresholds.error_rate:.2%} cap "
                    f"(stable {(rate_s or 0):.2%}, p={capped:.2g})"
                ),
            }
        )
    if n_c and relative < alpha:
        return result.model_copy(
            update={
                "verdict": Verdict.FAIL,
                "reason": (
                    f"canary error rate {rate_c:.2%} is significantly above stable's "
                    f"{(rate_s or 0):.2%} + {criteria.thresholds.max_error_rate_increase:.2%} (p={relative:.2g})"
                ),
            }
        )
    if n_c < criteria.min_requests or n_s < criteria.min_requests:
        return result.model_copy(update={"verdict": Verdict.INCONCLUSIVE, "reason": "not enough requests yet"})
    return result.model_copy(update={"reason": "no significant increase in errors"})


def judge_latency(stable: TrackSample, canary: TrackSample, criteria: Criteria) -> MetricResult:
    n_s, n_c = _count(stable.requests), _count(canary.requests)
    p_s, p_c = _finite(stable.p99_seconds), _finite(canary.p99_seconds)
    result = MetricResult(
        name="p99LatencySeconds",
        canary=p_c,
        stable=p_s,
        canary_samples=n_c,
        stable_samples=n_s,
        verdict=Verdict.INCONCLUSIVE,
        reason="",
    )
    if p_c is None or canary.buckets is None:
        return result.model_copy(update={"reason": "no latency histogram for the canary yet"})
    limits, alpha = criteria.thresholds, 1.0 - criteria.confidence
    n_hist = _count(max(count for _, count in canary.buckets))
    n_stable_hist = _count(max(count for _, count in stable.buckets)) if stable.buckets else 0

    def significant(limit: float) -> tuple[bool, int, float]:
        slow = slower_than(limit, canary.buckets or ())
        stable_slow = slower_than(limit, stable.buckets or ())
        baseline = max(0.01, (stable_slow + 1) / (n_stable_hist + 2))
        p_value = binomial_tail(slow, n_hist, baseline)
        return p_c > limit and p_value < alpha, slow, p_value

    over_cap, slow, p_value = significant(limits.p99_latency_seconds)
    if over_cap:
        return result.model_copy(
            update={
                "verdict": Verdict.FAIL,
                "reason": (
                    f"canary P99 {p_c * 1000:.0f}ms is above the {limits.p99_latency_seconds * 1000:.0f}ms cap "
                    f"({slow} of {n_hist} requests slower, p={p_value:.2g})"
                ),
            }
        )
    if p_s is not None and n_s >= criteria.min_requests:
        allowed = max(p_s * limits.max_latency_ratio, p_s + limits.latency_noise_floor_seconds)
        over_ratio, slow, p_value = significant(allowed)
        if over_ratio:
            return result.model_copy(
                update={
                    "verdict": Verdict.FAIL,
                    "reason": (
                        f"canary P99 {p_c * 1000:.0f}ms is over {limits.max_latency_ratio:g}x stable's "
                        f"{p_s * 1000:.0f}ms "
                        f"and the {limits.latency_noise_floor_seconds * 1000:.0f}ms noise floor "
                        f"({slow} of {n_hist} requests slower than {allowed * 1000:.0f}ms, p={p_value:.2g})"
                    ),
                }
            )
    if n_c < criteria.min_requests or n_s < criteria.min_requests:
        return result.model_copy(update={"reason": "a P99 passes only with minRequests on both tracks"})
    if p_s is None:
        return result.model_copy(update={"reason": "no latency histogram for stable"})
    return result.model_copy(update={"verdict": Verdict.PASS, "reason": "no significant slowdown"})


def judge_drift(drift: DriftSample, criteria: Criteria) -> MetricResult:
    count = _count(drift.comparisons)
    mean = _finite(drift.mean)
    result = MetricResult(
        name="drift",
        canary=mean,
        stable=0.0,
        canary_samples=count,
        stable_samples=count,
        verdict=Verdict.INCONCLUSIVE,
        reason="",
    )
    if count < MIN_DRIFT_COMPARISONS or mean is None:
        return result.model_copy(update={"reason": f"{count} of {MIN_DRIFT_COMPARISONS} mirrored comparisons"})
    if mean > criteria.thresholds.drift:
        return result.model_copy(
            update={
                "verdict": Verdict.FAIL,
                "reason": (
                    f"canary answers diverge from stable's: mean JS divergence {mean:.3f} > "
                    f"{criteria.thresholds.drift:g}"
                ),
            }
        )
    return result.model_copy(update={"verdict": Verdict.PASS, "reason": f"mean JS divergence {mean:.3f}"})


def judge(measurement: Measurement, criteria: Criteria) -> Outcome:
    """The verdict of one analysis. Fail wins over everything: significant evidence is acted on even when
    another query failed; then Error (a query failed), NoData (a track is not scraped), Inconclusive, Pass."""
    stable, canary = measurement.stable, measurement.canary
    metrics = [
        judge_requests(stable, canary, criteria.min_requests),
        judge_errors(stable, canary, criteria),
        judge_latency(stable, canary, criteria),
    ]
    if measurement.drift is not None:
        metrics.append(judge_drift(measurement.drift, criteria))
    failed = [m for m in metrics if m.verdict == Verdict.FAIL]
    if failed:
        return Outcome(Verdict.FAIL, "; ".join(m.reason for m in failed), tuple(metrics))
    if measurement.query_error:
        return Outcome(Verdict.ERROR, f"Prometheus query failed: {measurement.query_error}", tuple(metrics))
    blind = [track for track, sample in (("canary", canary), ("stable", stable)) if not sample.scraped]
    if blind:
        return Outcome(
            Verdict.NO_DATA, f"Prometheus has no metrics for the {' and '.join(blind)} track", tuple(metrics)
        )
    waiting = [m for m in metrics if m.verdict != Verdict.PASS]
    if waiting:
        return Outcome(Verdict.INCONCLUSIVE, "; ".join(m.reason for m in waiting), tuple(metrics))
    return Outcome(Verdict.PASS, "canary matches stable on every SLI", tuple(metrics))
