"""The analysis' e-values against independent references (scipy as the oracle), and their validity under
repeated looks checked by simulation: under the null hypothesis, looking after every few events, the
chance that an e-value ever reaches 1/alpha stays below alpha."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from model_operator.sequential import (
    BET_PRIOR,
    SHARE_PRIOR,
    log_mean_e_value,
    mean_e_value,
    p_value,
    share_e_value,
)


def _mixture_reference(successes: int, trials: int, null: float) -> float:
    """The prior-weighted average likelihood ratio of the alternatives, each from scipy's binomial pmf."""
    logit = math.log(null / (1 - null))
    total = 0.0
    for step, weight in SHARE_PRIOR:
        theta = 1 / (1 + math.exp(-(logit + step)))
        total += weight * math.exp(
            stats.binom.logpmf(successes, trials, theta) - stats.binom.logpmf(successes, trials, null)
        )
    return total


@pytest.mark.parametrize("prior", [SHARE_PRIOR, BET_PRIOR], ids=["share", "bet"])
def test_priors_are_distributions(prior: tuple[tuple[float, float], ...]) -> None:
    assert sum(weight for _, weight in prior) == pytest.approx(1.0)
    assert all(weight > 0 for _, weight in prior)


@pytest.mark.parametrize(
    ("successes", "trials", "null"),
    [
        (3, 10, 0.1),
        (8, 10, 0.5),
        (37, 45, 0.5),
        (2, 300, 0.01),
        (20, 300, 0.01),
        (0, 50, 0.2),
        (5, 5, 0.9),
        (700, 1200, 0.5),
        (160, 10000, 0.01),
    ],
)
def test_share_e_value_is_the_weighted_mixture(successes: int, trials: int, null: float) -> None:
    """Below 1 too (a share at or under the null): carried into the next step, it must be the e-value."""
    reference = _mixture_reference(successes, trials, null)
    assert share_e_value(successes, trials, null) == pytest.approx(reference, rel=1e-7)


@pytest.mark.parametrize(
    ("successes", "trials", "null", "expected"),
    [(0, 0, 0.3, 1.0), (4, 4, 1.0, 1.0), (0, 10, 0.0, 1.0), (1, 10, 0.0, math.inf)],
)
def test_share_e_value_edges(successes: int, trials: int, null: float, expected: float) -> None:
    assert share_e_value(successes, trials, null) == expected


def _betting_reference(values: list[float], null: float) -> float:
    """The average over the bets of the product of (1 + bet (x - null)), one observation at a time."""
    return float(sum(w * np.prod([1 + (f / null) * (x - null) for x in values]) for f, w in BET_PRIOR))


@pytest.mark.parametrize(
    ("values", "null"),
    [([0.0] * 5, 0.15), ([0.2, 0.3, 0.25, 0.4], 0.15), ([0.1] * 30 + [0.5] * 3, 0.15), ([0.9, 1.0], 0.5)],
)
def test_mean_e_value_is_the_betting_mixture(values: list[float], null: float) -> None:
    buckets = [(v, 1.0) for v in values]  # each value its own bucket, at its exact lower bound
    assert mean_e_value(buckets, null) == pytest.approx(_betting_reference(values, null), rel=1e-9)
    assert math.exp(log_mean_e_value(buckets, null)) == pytest.approx(_betting_reference(values, null), rel=1e-9)


def test_p_value_of_an_e_value() -> None:
    assert p_value(0.5) == 1.0
    assert p_value(200.0) == pytest.approx(0.005)


def _ever_rejects_share(rng: np.random.Generator, null: float, events: int, look_every: int, alpha: float) -> bool:
    hits = np.cumsum(rng.random(events) < null)
    return any(share_e_value(int(hits[k - 1]), k, null) >= 1 / alpha for k in range(look_every, events + 1, look_every))


@pytest.mark.parametrize("null", [0.05, 0.5])
def test_share_e_value_stays_valid_however_often_it_is_looked_at(null: float) -> None:
    rng, runs, alpha = np.random.default_rng(7), 1000, 0.05
    rejected = sum(_ever_rejects_share(rng, null, events=300, look_every=3, alpha=alpha) for _ in range(runs))
    # Ville: at most alpha; allow three binomial standard deviations of Monte Carlo error.
    assert rejected / runs <= alpha + 3 * math.sqrt(alpha * (1 - alpha) / runs)


def test_a_fixed_level_test_repeated_is_not_valid_and_this_would_catch_it() -> None:
    """The old method's flaw, shown with the same simulation: a 5% one-look binomial test repeated every 3
    events rejects a true null far more often than 5%."""
    rng, runs, alpha, null = np.random.default_rng(7), 200, 0.05, 0.5
    rejected = 0
    for _ in range(runs):
        hits = np.cumsum(rng.random(300) < null)
        rejected += any(stats.binom.sf(hits[k - 1] - 1, k, null) < alpha for k in range(3, 301, 3))
    assert rejected / runs > 2 * alpha


def test_mean_e_value_stays_valid_however_often_it_is_looked_at() -> None:
    rng, runs, alpha, null = np.random.default_rng(11), 500, 0.05, 0.15
    edges = np.array([0.0, 0.01, 0.02, 0.05, 0.1, 0.12, 0.14, 0.16, 0.18, 0.2, 0.25, 0.3, 0.4, 0.5, 0.75, 1.0])
    rejected = 0
    for _ in range(runs):
        values = rng.beta(1.5, 1.5 * (1 - null) / null, size=200)  # mean exactly `null`
        lows = edges[np.searchsorted(edges, values, side="left") - 1].clip(min=0)
        for k in range(4, 201, 4):
            counts = np.unique(lows[:k], return_counts=True)
            if mean_e_value(list(zip(counts[0].tolist(), counts[1].tolist(), strict=True)), null) >= 1 / alpha:
                rejected += 1
                break
    assert rejected / runs <= alpha + 3 * math.sqrt(alpha * (1 - alpha) / runs)


def test_mean_e_value_finds_a_real_excess() -> None:
    rng = np.random.default_rng(3)
    values = rng.beta(4, 16, size=60)  # mean 0.2 against a null of 0.15... and a bucket lower bound below
    edges = np.array([0.0, 0.05, 0.1, 0.12, 0.14, 0.16, 0.18, 0.2, 0.225, 0.25, 0.3, 0.35, 0.4, 0.5, 1.0])
    lows = edges[np.searchsorted(edges, values, side="left") - 1].clip(min=0)
    counts = np.unique(lows, return_counts=True)
    assert mean_e_value(list(zip(counts[0].tolist(), counts[1].tolist(), strict=True)), 0.05) >= 1e6
