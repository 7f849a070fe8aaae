"""Always-valid tests: e-values that may be looked at after every analysis interval, as often as the
rollout likes, without inflating the chance of a false rollback.

Each function returns an e-value E for a null hypothesis H0: a nonnegative number whose running value is a
nonnegative supermartingale under H0, so by Ville's inequality P(E ever reaches 1/alpha) <= alpha however
many times it is computed on growing counts. min(1, 1/E) is the matching always-valid p-value. Counts in,
floats out; no I/O. The derivations and assumptions are in docs/analysis.md.

* `share_e_value`: events that each fall on "the canary" with probability theta, H0: theta <= theta0,
  against a grid of alternatives (a prior-weighted mixture of likelihood ratios).
  One-sample (theta0 = a cap, events are requests that failed) or two-sample conditioned on the pooled
  count (events are the failures of both tracks, theta0 = the canary's share of requests).
* `mean_e_value`: observations in [0, 1] known by histogram bucket, H0: their mean <= m0 (drift).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

LOG_ZERO = -math.inf
# The mixtures' priors: (alternative, weight). A mixture pays log(1/weight) against the best single
# alternative, so the weight sits where the regressions a rollout must catch lie, and thins out where
# evidence is either hopeless within a rollout (a 10% higher odds needs thousands of events) or
# overwhelming anyway (a canary failing nearly every request is found in a handful whatever its weight).
#
# Share tests: log-odds above the null's. The mass is on 0.5-3 (odds 1.6x-20x the null's: a canary at
# 2.5% errors against 0.5% is 1.6 on the two-sample test and 0.9 against a 1% cap).
SHARE_PRIOR = (
    (0.1, 0.01), (0.2, 0.02), (0.35, 0.04), (0.5, 0.07), (0.75, 0.12), (1.0, 0.16),
    (1.5, 0.18), (2.0, 0.16), (3.0, 0.12), (4.5, 0.08), (7.0, 0.04),
)  # fmt: skip
# Drift bets as fractions of the largest allowed (1/m0). Growth is best at a fraction of about
# m0 (mu - m0) / variance, 0.3-0.5 for a mean 0.05 above a 0.15 limit; small bets keep growing for
# smaller excesses, large ones win fast for large excesses.
BET_PRIOR = ((0.05, 0.02), (0.1, 0.04), (0.2, 0.12), (0.35, 0.32), (0.5, 0.3), (0.7, 0.14), (0.9, 0.06))
ALTERNATIVE_LOG_ODDS = tuple(step for step, _ in SHARE_PRIOR)
BET_FRACTIONS = tuple(fraction for fraction, _ in BET_PRIOR)


def log_share_e_value(events: int, trials: int, null_share: float) -> float:
    """log E for H0: each of `trials` independent events is a success with probability <= `null_share`,
    having seen `events` successes. E is the prior-weighted average of the likelihood ratios of a fixed
    grid of alternatives above theta0, spaced in log-odds (SHARE_PRIOR, weights w_j summing to 1):

        E = sum over j of w_j (theta_j / theta0)^s ((1 - theta_j) / (1 - theta0))^(k - s)

    Each ratio is a martingale under theta0 and a supermartingale under any theta <= theta0 (its expected
    factor per event, theta theta_j/theta0 + (1-theta)(1-theta_j)/(1-theta0), rises with theta and is 1 at
    theta0), so their average is one for the whole null hypothesis. It is below 1 when the share observed
    is at or under theta0, and is kept so: evidence carried into the next step must be the e-value itself
    (a value raised to 1 would no longer be one)."""
    s, k = max(0, events), max(0, trials)
    s = min(s, k)
    if k == 0 or null_share >= 1.0:
        return 0.0
    if null_share <= 0.0:
        return math.inf if s else 0.0
    null_log_odds = math.log(null_share) - math.log1p(-null_share)
    total = LOG_ZERO
    for step, weight in SHARE_PRIOR:
        theta = 1.0 / (1.0 + math.exp(-(null_log_odds + step)))
        ratio = math.log(weight) + s * math.log(theta / null_share)
        if k > s:
            ratio += (k - s) * (math.log1p(-theta) - math.log1p(-null_share))
        total = _log_add(total, ratio)
    return total


def _log_add(a: float, b: float) -> float:
    if a == LOG_ZERO:
        return b
    return max(a, b) + math.log1p(math.exp(-abs(a - b)))


def share_e_value(events: int, trials: int, null_share: float) -> float:
    return _exp(log_share_e_value(events, trials, null_share))


def log_mean_e_value(buckets: Sequence[tuple[float, float]], null_mean: float) -> float:
    """log E for H0: observations in [0, 1] have mean <= `null_mean`, from a histogram: (lower bound of
    the bucket, count) pairs. For a bet lambda in [0, 1/m0), prod(1 + lambda (x_i - m0)) is a nonnegative
    supermartingale under H0 (testing by betting); each x_i is replaced by its bucket's lower bound, which
    only shrinks the product, so what is computed stays valid. E is the prior-weighted average over
    BET_PRIOR."""
    if null_mean >= 1.0:
        return 0.0
    if null_mean <= 0.0:
        return math.inf if any(low > 0 and count > 0 for low, count in buckets) else 0.0
    total = LOG_ZERO
    for fraction, weight in BET_PRIOR:
        bet = fraction / null_mean
        log_wealth = sum(
            count * math.log1p(bet * (min(max(low, 0.0), 1.0) - null_mean)) for low, count in buckets if count
        )
        total = _log_add(total, math.log(weight) + log_wealth)
    return total


def mean_e_value(buckets: Sequence[tuple[float, float]], null_mean: float) -> float:
    return _exp(log_mean_e_value(buckets, null_mean))


def p_value(e_value: float) -> float:
    """The always-valid p-value of an e-value."""
    return 1.0 if e_value <= 1.0 else 1.0 / e_value


def _exp(log_value: float) -> float:
    return math.inf if log_value > 700 else math.exp(log_value)
