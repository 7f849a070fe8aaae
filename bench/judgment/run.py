"""Thousands of simulated rollouts through the real `judge` and `decide`: how often a good canary is
rolled back (with its 95% confidence interval), and how often and how fast bad ones are caught.

    python -m bench.judgment.run                       # the full table (about 20-30 minutes on 2 cores)
    python -m bench.judgment.run --good 200 --bad 50   # a quick look

Traffic is synthetic and the operator's loop is simulated, not mocked: every `interval` the window since
the step started is measured (requests, 5xx, the latency histogram with the runtime's default buckets,
the router's divergence histogram, the answers' content outcomes), `judge` gives an Outcome and `decide`
moves the rollout, exactly as the reconciler does with Prometheus' answers. Requests arrive as a Poisson
process; each goes to the canary with the decided weight; latencies are lognormal (sigma 0.507: P99 =
3.25 x median); both tracks share stalls (5 s, on average every 2 minutes) that make every request 4x
slower and 10x likelier to fail.
The spec is README's example: steps 10%/2m and 50%/5m, minRequests 200, p99LatencySeconds 2.0,
errorRate 0.01, confidence 0.99; 0.5% errors on both tracks; mirrorPercent 5; of the answers 30% cut by
max_tokens, 1% empty and 0.2% undecodable on both tracks.
Good canaries drift Beta(0.5, 9.5) (mean 0.05); the bfloat16 canaries' divergences are instead drawn from
those measured between real answers of SmolLM2 in float32 and bfloat16 (bench/runtime/dtype_drift.py,
saved in bench/judgment/bf16_divergences.json): a runtime upgrade whose `dtype: auto` turns bfloat16, and
two bfloat16 revisions whose batches differ.

The baseline, measured in the same run, is the method this replaced (bench/judgment/legacy.py: fixed-level
binomial tests against stable's rate taken as exact, repeated every interval, on the old coarser buckets).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
import zlib
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

from bench.judgment import legacy
from model_operator import analysis
from model_operator.api.spec import ModelDeploymentSpec
from model_operator.api.status import HistoryResult, ModelDeploymentStatus, Phase
from model_operator.rollout import Observation, RevisionState, analysis_due, decide
from model_runtime.contract import (
    CONTENT_ISSUES,
    DEFAULT_LATENCY_BUCKETS,
    DIVERGENCE_BUCKETS,
    OUTCOME_ALL,
    OUTCOME_EMPTY,
    OUTCOME_INVALID_JSON,
    OUTCOME_TRUNCATED,
    OUTCOME_UNDECODABLE,
)

SIGMA = 0.507  # lognormal shape: P99 / median = exp(2.326 sigma) = 3.25
BASE_ERROR_RATE = 0.005
STALL_EVERY_SECONDS, STALL_SECONDS, STALL_SLOWDOWN, STALL_ERRORS = 120.0, 5.0, 4.0, 10.0
MIRROR_SHARE = 0.05
# What each answered request's content is, on both tracks alike: most are cut by max_tokens, a few empty or
# garbled (OUTCOMES order); a bad canary adds empty answers.
OUTCOMES = ("ok", *CONTENT_ISSUES)  # the simulation draws one per choice; the runtime counts each kind
GOOD_CONTENT = {OUTCOME_EMPTY: 0.01, OUTCOME_UNDECODABLE: 0.002, OUTCOME_INVALID_JSON: 0.0, OUTCOME_TRUNCATED: 0.3}
GOOD_DRIFT, BAD_DRIFT, DRIFT_CONCENTRATION = 0.05, 0.2, 10.0
LEGACY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 7.5,
                  10.0, 15.0, 30.0, 60.0)  # fmt: skip
LEGACY_DIVERGENCE = (0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0)
MAX_SECONDS = 1800.0
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def readme_spec(interval: str) -> ModelDeploymentSpec:
    return ModelDeploymentSpec.model_validate(
        {
            "model": {"uri": "pvc://models/m"},
            "rollout": {
                "steps": [{"weight": 10, "pause": "2m"}, {"weight": 50, "pause": "5m"}],
                "analysis": {
                    "interval": interval,
                    "minRequests": 200,
                    "confidence": 0.99,
                    "thresholds": {"p99LatencySeconds": 2.0, "errorRate": 0.01},
                },
            },
        }
    )


@dataclass(frozen=True)
class Canary:
    """How the canary differs from stable."""

    name: str
    slowdown: float = 1.0
    extra_errors: float = 0.0
    drift: float = GOOD_DRIFT
    extra_empty: float = 0.0  # a share of answers turned empty (200s)
    # Divergences measured between two good revisions: each mirrored request draws one (then `drift` is unused).
    measured_drift: tuple[float, ...] = ()

    @property
    def good(self) -> bool:
        good_drift = self.drift == GOOD_DRIFT or bool(self.measured_drift)
        return self.slowdown == 1.0 and self.extra_errors == 0.0 and good_drift and not self.extra_empty

    def divergences(self, rng: np.random.Generator, count: int) -> np.ndarray:
        if self.measured_drift:
            return rng.choice(np.array(self.measured_drift), size=count)
        mean = self.drift
        return rng.beta(mean * DRIFT_CONCENTRATION, (1 - mean) * DRIFT_CONCENTRATION, size=count)

    def content_shares(self) -> np.ndarray:
        issues = {**GOOD_CONTENT, OUTCOME_EMPTY: GOOD_CONTENT[OUTCOME_EMPTY] + self.extra_empty}
        shares = np.array([0.0, *(issues[kind] for kind in CONTENT_ISSUES)])
        shares[0] = 1.0 - shares.sum()
        return shares


GOOD = Canary("good")
BAD = (
    Canary("+2 points of errors", extra_errors=0.02),
    Canary("+5 points of errors", extra_errors=0.05),
    Canary("latency x1.3", slowdown=1.3),
    Canary("latency x2", slowdown=2.0),
    Canary("drift mean 0.2 vs 0.05", drift=BAD_DRIFT),
    Canary("+10 points of empty answers", extra_empty=0.10),
)


@dataclass(frozen=True)
class Cell:
    rate: float  # requests per second, both tracks together
    interval: int  # seconds
    cap_binds: bool  # stable's own P99 (2.6 s) is above the 2.0 s cap; else it is 1.3 s

    @property
    def median(self) -> float:
        return 0.8 if self.cap_binds else 0.4

    def label(self) -> str:
        return f"{self.rate:g} req/s, {self.interval}s, {'cap binds' if self.cap_binds else 'cap free'}"


@dataclass
class Track:
    """Cumulative counts of one track since the step started."""

    bounds: tuple[float, ...]
    requests: int = 0
    errors: int = 0
    total: float = 0.0  # the sum of the observed values (the histogram's _sum)
    histogram: np.ndarray = field(default_factory=lambda: np.zeros(0))
    content: np.ndarray = field(default_factory=lambda: np.zeros(len(OUTCOMES)))  # choices by OUTCOMES

    def __post_init__(self) -> None:
        self.histogram = np.zeros(len(self.bounds) + 1)

    def answer(self, rng: np.random.Generator, answered: int, shares: np.ndarray) -> None:
        """The content of `answered` successful requests, one choice each."""
        self.content += rng.multinomial(answered, shares)

    def content_sample(self) -> dict[str, float]:
        counts = {outcome: float(count) for outcome, count in zip(OUTCOMES, self.content, strict=True) if count}
        total = counts.pop("ok", 0.0) + sum(counts.values())
        return {OUTCOME_ALL: total, **counts} if total else {}

    def add(self, latencies: np.ndarray, failed: np.ndarray) -> None:
        self.requests += len(latencies)
        self.errors += int(failed.sum())
        self.total += float(latencies.sum())
        self.histogram += np.bincount(np.searchsorted(self.bounds, latencies), minlength=len(self.bounds) + 1)

    def buckets(self) -> tuple[tuple[float, float], ...]:
        cumulative = np.cumsum(self.histogram)
        return tuple(zip((*self.bounds, math.inf), (float(c) for c in cumulative), strict=True))


@dataclass
class Result:
    rolled_back: bool
    promoted: bool
    seconds: float
    after_min_requests: float | None  # rollback time after the canary had minRequests in its step
    reason: str


Judge = Callable[[Track, Track, Track | None, ModelDeploymentSpec, ModelDeploymentStatus], analysis.Outcome]


def judge_new(
    stable: Track, canary: Track, drift: Track | None, spec: ModelDeploymentSpec, status: ModelDeploymentStatus
) -> analysis.Outcome:
    def sample(track: Track) -> analysis.TrackSample:
        buckets = track.buckets() if track.requests else None
        return analysis.TrackSample(track.requests, track.errors, buckets, True, content=track.content_sample())

    drift_sample = None
    if drift is not None:
        mean = drift.total / drift.requests if drift.requests else None
        drift_sample = analysis.DriftSample(drift.requests, mean, drift.buckets())
    measurement = analysis.Measurement(
        sample(stable), sample(canary), drift_sample, with_content=analysis.content_measured(spec)
    )
    return analysis.judge(measurement, analysis.criteria_for(spec), status.carried_evidence)


def judge_legacy(
    stable: Track, canary: Track, drift: Track | None, spec: ModelDeploymentSpec, status: ModelDeploymentStatus
) -> analysis.Outcome:
    def sample(track: Track) -> legacy.TrackSample:
        return legacy.TrackSample(track.requests, track.errors, track.buckets() if track.requests else None, True)

    drift_sample = None
    if drift is not None:
        drift_sample = legacy.DriftSample(drift.requests, drift.total / drift.requests if drift.requests else None)
    settings = spec.rollout.analysis
    outcome = legacy.judge(
        legacy.Measurement(sample(stable), sample(canary), drift_sample),
        legacy.Criteria(settings.thresholds, settings.min_requests, settings.confidence),
    )
    return analysis.Outcome(outcome.verdict, outcome.message, outcome.metrics)


def simulate(cell: Cell, canary: Canary, judge: Judge, seed: int, latency_bounds: tuple[float, ...],
             divergence_bounds: tuple[float, ...]) -> Result:  # fmt: skip
    rng = np.random.default_rng(seed)
    spec = readme_spec(f"{cell.interval}s")
    stalls = np.cumsum(rng.exponential(STALL_EVERY_SECONDS, size=int(MAX_SECONDS / STALL_EVERY_SECONDS * 3) + 10))
    status = ModelDeploymentStatus(stable_revision="stable", phase=Phase.HEALTHY, observed_generation=1)
    revisions = {"stable": RevisionState(1, 1), "canary": RevisionState(1, 1)}
    stable, canary_track = Track(latency_bounds), Track(latency_bounds)
    drift = Track(divergence_bounds) if analysis.drift_measured(spec) else None
    step: int | None = None
    weight = 0
    started_min_at: float | None = None
    now_s, previous_s = 0.0, 0.0
    while now_s <= MAX_SECONDS:
        now = T0 + timedelta(seconds=now_s)
        if now_s > previous_s:
            _traffic(rng, cell, canary, weight, previous_s, now_s, stalls, stable, canary_track, drift)
        outcome = None
        if analysis_due(status, spec, now):
            outcome = judge(stable, canary_track, drift, spec, status)
        observation = Observation(1, spec, (), "canary", None, revisions, outcome, now)
        decision = decide(status, observation)
        status = decision.status
        if decision.rollout_result is not None:
            entry = status.history[-1]
            after = None if started_min_at is None else now_s - started_min_at
            return Result(
                entry.result == HistoryResult.ROLLED_BACK, entry.result == HistoryResult.PROMOTED, now_s, after,
                entry.reason,
            )  # fmt: skip
        if status.current_step != step:  # a new step: a new window, counted afresh
            step = status.current_step
            stable, canary_track = Track(latency_bounds), Track(latency_bounds)
            drift = Track(divergence_bounds) if drift is not None else None
            started_min_at = None
        weight = status.canary_weight
        if started_min_at is None and min(stable.requests, canary_track.requests) >= spec.rollout.analysis.min_requests:
            started_min_at = now_s
        previous_s, now_s = now_s, now_s + cell.interval
    return Result(False, False, MAX_SECONDS, None, "undecided")


def _traffic(rng: np.random.Generator, cell: Cell, canary: Canary, weight: int, start: float, end: float,
             stalls: np.ndarray, stable: Track, canary_track: Track, drift: Track | None) -> None:  # fmt: skip
    count = rng.poisson(cell.rate * (end - start))
    if count == 0:
        return
    times = rng.uniform(start, end, size=count)
    stalled = np.zeros(count, dtype=bool)
    for begin in stalls[(stalls > start - STALL_SECONDS) & (stalls < end)]:
        stalled |= (times >= begin) & (times < begin + STALL_SECONDS)
    to_canary = rng.random(count) < weight / 100
    latency = rng.lognormal(math.log(cell.median), SIGMA, size=count) * np.where(stalled, STALL_SLOWDOWN, 1.0)
    error_rate = np.where(stalled, BASE_ERROR_RATE * STALL_ERRORS, BASE_ERROR_RATE)
    latency = np.where(to_canary, latency * canary.slowdown, latency)
    error_rate = np.where(to_canary, np.minimum(1.0, error_rate + canary.extra_errors), error_rate)
    failed = rng.random(count) < error_rate
    stable.add(latency[~to_canary], failed[~to_canary])
    canary_track.add(latency[to_canary], failed[to_canary])
    stable.answer(rng, int((~to_canary & ~failed).sum()), GOOD.content_shares())
    canary_track.answer(rng, int((to_canary & ~failed).sum()), canary.content_shares())
    if drift is not None and weight > 0:
        mirrored = rng.binomial(count, MIRROR_SHARE)
        drift.add(canary.divergences(rng, mirrored), np.zeros(0, dtype=bool))


MEASURED_DRIFT = Path(__file__).with_name("bf16_divergences.json")
BF16_PAIRS = {  # the canary's name: the measured pair its divergences come from
    "bfloat16 canary, float32 stable": "float32 alone vs bfloat16 in a batch of 32",
    "bfloat16 canary, bfloat16 stable": "bfloat16 alone vs bfloat16 in a batch of 32",
}


def bf16_canaries(path: Path = MEASURED_DRIFT) -> tuple[list[Canary], dict[str, str]]:
    """Good canaries drifting as measured, and where and how that was measured."""
    measured = json.loads(path.read_text())
    canaries = [Canary(name, measured_drift=tuple(measured["pairs"][pair])) for name, pair in BF16_PAIRS.items()]
    return canaries, {key: str(measured[key]) for key in ("measured", "command", "cpu", "bf16_native")}


METHODS: dict[str, tuple[Judge, tuple[float, ...], tuple[float, ...]]] = {
    "e-values (this)": (judge_new, DEFAULT_LATENCY_BUCKETS, DIVERGENCE_BUCKETS),
    "baseline (old)": (judge_legacy, LEGACY_BUCKETS, LEGACY_DIVERGENCE),
}


def _batch(args: tuple[Cell, Canary, str, int, int]) -> list[Result]:
    cell, canary, method, first_seed, count = args
    judge, latency_bounds, divergence_bounds = METHODS[method]
    return [simulate(cell, canary, judge, seed, latency_bounds, divergence_bounds)
            for seed in range(first_seed, first_seed + count)]  # fmt: skip


def wilson(successes: int, trials: int, z: float = 1.96) -> tuple[float, float]:
    """The Wilson score interval of a binomial proportion."""
    if trials == 0:
        return 0.0, 1.0
    p = successes / trials
    centre = (p + z * z / (2 * trials)) / (1 + z * z / trials)
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / (1 + z * z / trials)
    return max(0.0, centre - half), min(1.0, centre + half)


def run(
    jobs: list[tuple[Cell, Canary, str, int]], workers: int, chunk: int = 50
) -> dict[tuple[Cell, Canary, str], list[Result]]:
    tasks = []
    for cell, canary, method, count in jobs:
        seed_base = zlib.crc32(f"{cell}/{canary.name}/{method}".encode()) * 10_000
        tasks += [(cell, canary, method, seed_base + i, min(chunk, count - i)) for i in range(0, count, chunk)]
    results: dict[tuple[Cell, Canary, str], list[Result]] = {}
    with ProcessPoolExecutor(max_workers=workers) as pool:
        for task, batch in zip(tasks, pool.map(_batch, tasks), strict=True):
            results.setdefault((task[0], task[1], task[2]), []).extend(batch)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--good", type=int, default=2000, help="good canaries per cell (this method)")
    parser.add_argument("--baseline", type=int, default=500, help="good canaries per cell (the old method)")
    parser.add_argument("--bad", type=int, default=500, help="bad canaries of each kind, per cap setting")
    parser.add_argument("--measured", type=int, default=2000, help="bfloat16 canaries of each kind, per cap setting")
    parser.add_argument("--measured-only", action="store_true", help="only the bfloat16 canaries")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args(argv)
    started = time.monotonic()
    cells = [Cell(rate, interval, binds) for binds in (True, False) for interval in (5, 30) for rate in (2, 10, 50)]
    jobs: list[tuple[Cell, Canary, str, int]] = []
    readme_cells = [Cell(10, 30, binds) for binds in (True, False)]
    if not args.measured_only:
        for cell in cells:
            jobs.append((cell, GOOD, "e-values (this)", args.good))
            jobs.append((cell, GOOD, "baseline (old)", args.baseline))
        for cell in readme_cells:
            for canary in BAD:
                for method in METHODS:
                    jobs.append((cell, canary, method, args.bad if method == "e-values (this)" else args.bad // 2))
    bf16, provenance = bf16_canaries()
    for cell in readme_cells:
        for canary in bf16:
            for method in METHODS:
                jobs.append((cell, canary, method, args.measured if method == "e-values (this)" else args.baseline))
    results = run(jobs, args.workers)
    failures = [] if args.measured_only else report(cells, readme_cells, results, args)
    failures += report_measured(readme_cells, bf16, provenance, results)
    print(f"\n{sum(len(r) for r in results.values())} rollouts simulated in {time.monotonic() - started:.0f}s")
    return 1 if failures else 0


def print_reasons(outcomes: list[Result]) -> None:
    """Which SLI rolled back the good canaries among `outcomes`."""
    reasons: dict[str, int] = {}
    for r in outcomes:
        if r.rolled_back:
            sli = " ".join(r.reason.split("analysis failed: ", 1)[-1].split(" ", 2)[:2])
            reasons[sli] = reasons.get(sli, 0) + 1
    if reasons:
        print("\nWhat rolled back good canaries (this method): " + ", ".join(f"{k}: {v}" for k, v in reasons.items()))


def report_measured(readme_cells: list[Cell], canaries: list[Canary], provenance: dict[str, str],
                    results: dict[tuple[Cell, Canary, str], list[Result]]) -> list[str]:  # fmt: skip
    failures: list[str] = []
    print(
        "\nGood bfloat16 canaries at 10 req/s, interval 30s (README's spec), drift drawn from the divergences"
        f" measured {provenance['measured']} on {provenance['cpu']} (native bf16: {provenance['bf16_native']};"
        f" `{provenance['command']}`), rolled back, with the 95% Wilson interval"
    )
    print("| canary | divergences (mean, max) | cell | this method | baseline (old method) |\n|---|---|---|---|---|")
    for canary in canaries:
        for cell in readme_cells:
            drift = canary.measured_drift
            row = [canary.name, f"{len(drift)} ({statistics.fmean(drift):.4f}, {max(drift):.4f})"]
            row.append("cap binds" if cell.cap_binds else "cap free")
            for method in METHODS:
                outcomes = results[(cell, canary, method)]
                back = sum(r.rolled_back for r in outcomes)
                low, high = wilson(back, len(outcomes))
                row.append(f"{back}/{len(outcomes)} = {back / len(outcomes):.2%} [{low:.2%}, {high:.2%}]")
                if method == "e-values (this)" and (back / len(outcomes) > 0.01 or high > 0.015):
                    failures.append(f"{canary.name} ({row[2]}): false rollbacks {back}/{len(outcomes)}")
            print("| " + " | ".join(row) + " |")
    print_reasons([r for c in canaries for cell in readme_cells for r in results[(cell, c, "e-values (this)")]])
    return failures


def report(cells: list[Cell], readme_cells: list[Cell], results: dict[tuple[Cell, Canary, str], list[Result]],
           args: argparse.Namespace) -> list[str]:  # fmt: skip
    failures: list[str] = []
    print("\nGood canaries (identical to stable) rolled back, with the 95% Wilson interval")
    print("| cell | this method | promoted by (median, p90) | baseline (old method) | promoted by |")
    print("|---|---|---|---|---|")
    for cell in cells:
        row = [cell.label()]
        for method in METHODS:
            outcomes = results[(cell, GOOD, method)]
            back = sum(r.rolled_back for r in outcomes)
            low, high = wilson(back, len(outcomes))
            row.append(f"{back}/{len(outcomes)} = {back / len(outcomes):.2%} [{low:.2%}, {high:.2%}]")
            promoted = sorted(r.seconds for r in outcomes if r.promoted)
            undecided = sum(not r.promoted and not r.rolled_back for r in outcomes)
            promoted_by = (
                f"{statistics.median(promoted):.0f}s, {promoted[int(0.9 * len(promoted))]:.0f}s" if promoted else "-"
            )
            row.append(promoted_by + (f" ({undecided} undecided at {MAX_SECONDS:.0f}s)" if undecided else ""))
            if method == "e-values (this)" and (back / len(outcomes) > 0.01 or high > 0.015):
                failures.append(f"{cell.label()}: false rollbacks {back}/{len(outcomes)} (upper bound {high:.2%})")
        print("| " + " | ".join(row) + " |")
    print("\nBad canaries at 10 req/s, interval 30s (README's spec): caught before promotion")
    print("| canary | cell | this method | median s after minRequests | baseline (old method) |\n|---|---|---|---|---|")
    targets = {
        "+2 points of errors": 0.9,
        "latency x1.3": 0.9,
        "latency x2": 1.0,
        "drift mean 0.2 vs 0.05": 1.0,
        "+10 points of empty answers": 1.0,
    }
    for canary in BAD:
        for cell in readme_cells:
            row = [canary.name, "cap binds" if cell.cap_binds else "cap free"]
            for method in METHODS:
                outcomes = results[(cell, canary, method)]
                caught = sum(r.rolled_back for r in outcomes)
                row.append(f"{caught}/{len(outcomes)} = {caught / len(outcomes):.1%}")
                if method == "e-values (this)":
                    times = [r.after_min_requests if r.after_min_requests is not None else 0.0
                             for r in outcomes if r.rolled_back]  # fmt: skip
                    median = statistics.median(times) if times else math.nan
                    row.append(f"{median:.0f}")
                    target = targets.get(canary.name)
                    if target is not None and caught / len(outcomes) < target:
                        failures.append(f"{canary.name} ({row[1]}): caught {caught / len(outcomes):.1%} < {target:.0%}")
                    if canary.name == "+5 points of errors" and not median <= 3 * cell.interval:
                        failures.append(f"{canary.name} ({row[1]}): median {median:.0f}s > 3 intervals")
            print("| " + " | ".join(row) + " |")
    print_reasons([r for cell in cells for r in results[(cell, GOOD, "e-values (this)")]])
    print("\nTargets: " + ("all met" if not failures else "NOT MET:\n  " + "\n  ".join(failures)))
    del args
    return failures


if __name__ == "__main__":
    sys.exit(main())
