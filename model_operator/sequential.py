"""Always-valid tests: e-values that may be looked at after every analysis interval, as often as the
rollout likes, without inflating the chance of a false rollback.

Each function returns an e-value E for a null hypothesis H0: a nonnegative number whose running value is a
nonnegative supermartingale under H0, so by Ville's inequality P(E ever reaches 1/alpha) <= alpha however
many times it is computed on growing counts. min(1, 1/E) is the matching always-valid p-value. Counts in,
floats out; no I/O. The derivations and assumptions are in docs/analysis.md.

* `share_e_value`: events that each fall on "the canary" with probability theta, H0: theta <= theta0,
  against a grid of alternatives (a mixture of likelihood ratios).
  One-sample (theta0 = a cap, events are requests that failed) or two-sample conditioned on the pooled
  count (events are the failures of both tracks, theta0 = the canary's share of requests).
* `mean_e_value`: observations in [0, 1] known by histogram bucket, H0: their mean <= m0 (drift).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

LOG_ZERO = -math.inf
# Bets on the drift mean as fractions of the largest allowed (1/m0): a mixture over several sizes finds
# a large excess quickly and a small one eventually, at a cost of log(len) in the threshold.
BET_FRACTIONS = (0.05, 0.1, 0.2, 0.35, 0.5, 0.7, 0.9)
# Alternatives of the share tests, as log-odds above the null's: from a 10% higher odds (a small excess,
# found with much data) to 1000x (a canary failing nearly every request, found in a handful).
ALTERNATIVE_LOG_ODDS = (0.1, 0.2, 0.35, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 4.5, 7.0)


def log_share_e_value(events: int, trials: int, null_share: float) -> float:
    """log E for H0: each of `trials` independent events is a success with probability <= `null_share`,
    having seen `events` successes. E averages the likelihood ratios of a fixed grid of alternatives above
    theta0, spaced in log-odds (ALTERNATIVE_LOG_ODDS):

        E = mean over j of (theta_j / theta0)^s ((1 - theta_j) / (1 - theta0))^(k - s)

    Each ratio is a martingale under theta0 and a supermartingale under any theta <= theta0 (its expected
    factor per event, theta theta_j/theta0 + (1-theta)(1-theta_j)/(1-theta0), rises with theta and is 1 at
    theta0), so their average is one for the whole null hypothesis. While the observed share is at most
    theta0 every ratio is at most 1, so E <= 1: it is reported as 1 (no evidence), which changes no
    decision and skips the work. The grid costs log(len) against the best single alternative."""
    s, k = max(0, events), max(0, trials)
    s = min(s, k)
    if k == 0 or null_share >= 1.0 or s <= k * null_share:
        return 0.0
    if null_share <= 0.0:
        return math.inf
    null_log_odds = math.log(null_share) - math.log1p(-null_share)
    total = LOG_ZERO
    for step in ALTERNATIVE_LOG_ODDS:
        theta = 1.0 / (1.0 + math.exp(-(null_log_odds + step)))
        ratio = s * math.log(theta / null_share)
        if k > s:
            ratio += (k - s) * (math.log1p(-theta) - math.log1p(-null_share))
        total = _log_add(total, ratio)
    return max(0.0, total - math.log(len(ALTERNATIVE_LOG_ODDS)))


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
    only shrinks the product, so what is computed stays valid. E is the average over BET_FRACTIONS."""
    if null_mean >= 1.0:
        return 0.0
    if null_mean <= 0.0:
        return math.inf if any(low > 0 and count > 0 for low, count in buckets) else 0.0
    total = LOG_ZERO
    for fraction in BET_FRACTIONS:
        bet = fraction / null_mean
        log_wealth = sum(
            count * math.log1p(bet * (min(max(low, 0.0), 1.0) - null_mean)) for low, count in buckets if count
        )
        total = (
            log_wealth if total == LOG_ZERO else max(total, log_wealth) + math.log1p(math.exp(-abs(total - log_wealth)))
        )
    return total - math.log(len(BET_FRACTIONS))


def mean_e_value(buckets: Sequence[tuple[float, float]], null_mean: float) -> float:
    return _exp(log_mean_e_value(buckets, null_mean))


def p_value(e_value: float) -> float:
    """The always-valid p-value of an e-value."""
    return 1.0 if e_value <= 1.0 else 1.0 / e_value


def _exp(log_value: float) -> float:
    return math.inf if log_value > 700 else math.exp(log_value)
