"""Leader election: the Lease decision table, a simulation of thousands of campaigns with crashes,
partitions, pauses, lost responses and racing writes (never two leaders, and a standby takes over within
the bound), the campaign loop giving up in time, the operator's standby mode and its write fence."""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import random
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from kubernetes.client import ApiClient

from model_operator import kube as kube_module
from model_operator import reconciler
from model_operator.kube import Kube, NotLeading
from model_operator.leadership import Leadership, LeaseConflict, LeaseRecord, Timing, next_record
from model_operator.lease_store import lease_body, record_of
from model_operator.settings import OperatorSettings, load_settings

T0 = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)
TIMING = Timing(lease_duration=15, renew_deadline=10, retry_period=2)
HELD = LeaseRecord(holder="b", duration_seconds=15, acquire_time=T0, renew_time=T0, transitions=3, resource_version="7")


@pytest.mark.parametrize(
    ("current", "seen_for", "expected"),
    [
        # No Lease yet: create it, first holder, no transition.
        (None, 0.0, LeaseRecord("a", 15, T0, T0, 0)),
        # Another holder, seen unchanged for less than its duration: wait.
        (HELD, 0.0, None),
        (HELD, 14.9, None),
        # ... for its whole duration: take over, counting a transition, at the resourceVersion read.
        (HELD, 15.0, LeaseRecord("a", 15, T0, T0, 4, "7")),
        # The record's own duration counts, not ours.
        (replace(HELD, duration_seconds=60), 30.0, None),
        # Released (empty holder): take it at once.
        (replace(HELD, holder="", duration_seconds=1), 0.0, LeaseRecord("a", 15, T0, T0, 4, "7")),
        # Our own: renew, keeping the acquire time and the transitions.
        (
            replace(HELD, holder="a", acquire_time=T0 - timedelta(hours=1)),
            99.0,
            LeaseRecord("a", 15, T0 - timedelta(hours=1), T0, 3, "7"),
        ),
    ],
)
def test_next_record(current: LeaseRecord | None, seen_for: float, expected: LeaseRecord | None) -> None:
    assert next_record(current, seen_for, "a", TIMING, T0) == expected


def test_a_fractional_lease_duration_is_rounded_up_on_the_lease() -> None:
    """The Lease holds whole seconds; rounding 10.4 down to 10 would put a 10.2 s renew deadline past it."""
    record = next_record(None, 0.0, "a", Timing(lease_duration=10.4, renew_deadline=10.2, retry_period=1), T0)
    assert record is not None
    assert record.duration_seconds == 11


@pytest.mark.parametrize(
    ("lease", "deadline", "retry"),
    [(15, 15, 2), (15, 10, 10), (15, 20, 2), (15, 10, 0)],
)
def test_unsafe_timing_is_refused(lease: float, deadline: float, retry: float) -> None:
    with pytest.raises(ValueError, match="retry period < renew deadline < lease duration"):
        Timing(lease, deadline, retry)


def test_settings_refuse_unsafe_timing_naming_the_rule() -> None:
    with pytest.raises(ValueError, match="renew deadline < lease duration"):
        load_settings({"MODELSHIP_RENEW_DEADLINE_SECONDS": "20"})
    assert load_settings({}).lease_timing() == Timing()
    with pytest.raises(ValueError, match="MODELSHIP_API_WORKERS"):
        load_settings({"MODELSHIP_API_WORKERS": "0"})
    with pytest.raises(ValueError, match="MODELSHIP_ANALYSIS_BATCH_SECONDS"):
        load_settings({"MODELSHIP_ANALYSIS_BATCH_SECONDS": "-0.5"})
    with pytest.raises(ValueError, match="MODELSHIP_ANALYSIS_BATCH_SECONDS"):
        load_settings({"MODELSHIP_ANALYSIS_BATCH_SECONDS": "a second"})
    with pytest.raises(ValueError, match="MODELSHIP_LEADER_ELECTION"):
        load_settings({"MODELSHIP_LEADER_ELECTION": "sometimes"})


def test_lease_bodies_round_trip() -> None:
    record = LeaseRecord("pod-1_ab", 15, T0, T0 + timedelta(microseconds=1500), 2, "41")
    body = lease_body("modelship", "ops", record)
    assert body["spec"]["renewTime"] == "2026-12-03T12:00:00.001500Z"
    assert record_of(body) == record
    assert "resourceVersion" not in lease_body("m", "ops", replace(record, resource_version=None))["metadata"]


# ---- the simulation --------------------------------------------------------------------------------------


class World:
    """One Lease store with resourceVersions, a shared real time, and per-replica faults."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.now = 0.0
        self.record: LeaseRecord | None = None
        self.version = 0
        self.partitioned: set[str] = set()
        self.racers: list[Leadership] = []  # who may slip a whole attempt in between a read and a write

    def store_for(self, name: str) -> SimStore:
        return SimStore(self, name)


class SimStore:
    def __init__(self, world: World, name: str) -> None:
        self.world, self.name = world, name

    def _latency(self) -> None:
        self.world.now += self.world.rng.uniform(0.0, 0.6)

    def read(self) -> LeaseRecord | None:
        self._latency()
        if self.name in self.world.partitioned:
            raise ConnectionError("partitioned")
        return self.world.record

    def write(self, record: LeaseRecord) -> LeaseRecord:
        world = self.world
        if world.racers and world.rng.random() < 0.2:
            racer = world.rng.choice(world.racers)
            if racer.identity != self.name:
                world.racers.remove(racer)  # no nesting deeper than one
                racer.attempt()
                world.racers.append(racer)
        self._latency()
        if self.name in world.partitioned:
            raise ConnectionError("partitioned")
        current_version = None if world.record is None else world.record.resource_version
        if record.resource_version != current_version:
            raise LeaseConflict("moved on")
        world.version += 1
        world.record = replace(record, resource_version=str(world.version))
        stored = world.record
        self._latency()
        if world.rng.random() < 0.05:
            raise ConnectionError("the write landed, its response was lost")
        return stored


def _simulate(seed: int) -> tuple[int, list[float]]:
    """Three replicas for 600 simulated seconds; returns (leader changes, takeover delays after a crash)."""
    rng = random.Random(seed)
    world = World(rng)
    drift = {name: rng.uniform(0.98, 1.02) for name in "abc"}  # clocks run at slightly different rates
    replicas = {
        name: Leadership(
            world.store_for(name),
            name,
            TIMING,
            clock=lambda name=name: world.now * drift[name],  # type: ignore[misc]
            wall=lambda: T0 + timedelta(seconds=world.now),
        )
        for name in "abc"
    }
    world.racers = list(replicas.values())
    next_try = {name: rng.uniform(0, 2) for name in replicas}
    crashed_at: float | None = None
    paused: dict[str, float] = {}
    changes, takeovers, last_leader = 0, [], None
    while world.now < 600:
        name = min(next_try, key=lambda n: next_try[n])
        world.now = max(world.now, next_try[name])
        fault = rng.random()
        if fault < 0.01 and crashed_at is None:
            leader = next((n for n, r in replicas.items() if r.holds()), None)
            if leader is not None:  # the leader dies: a new process, a new identity, a fresh campaign
                crashed_at = world.now
                dead = replicas[leader]
                replicas[leader] = Leadership(
                    world.store_for(leader + "'"), leader + "'", TIMING, clock=dead.clock, wall=dead.wall
                )
                world.racers = list(replicas.values())
                next_try[leader] = world.now + 5
                continue
        elif fault < 0.03:
            world.partitioned ^= {name}
        elif fault < 0.04:
            paused[name] = world.now + rng.uniform(0, 30)  # a stop-the-world pause or a frozen process
        if paused.get(name, 0) > world.now:
            next_try[name] = paused[name]
            continue
        replicas[name].attempt()
        holders = [n for n, r in replicas.items() if r.holds()]
        assert len(holders) <= 1, f"seed {seed}: {holders} both lead at t={world.now:.2f}"
        if holders and holders[0] != last_leader:
            changes += 1
            last_leader = holders[0]
            if crashed_at is not None:
                takeovers.append(world.now - crashed_at)
                crashed_at = None
        next_try[name] = world.now + rng.uniform(0.1, 1.0) * TIMING.retry_period  # any schedule must be safe
    return changes, takeovers


def test_simulated_campaigns_never_have_two_leaders_and_take_over_in_bounded_time(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """1,000 campaigns of three replicas with crashes, partitions, pauses, lost responses and racing
    writes. The assertion on two leaders runs after every attempt; a takeover after a crash is bounded by
    the lease duration plus what partitions and pauses of the standbys add."""
    caplog.set_level(logging.ERROR, logger="model_operator.leadership")  # a warning per failed call
    changes, takeovers = 0, []
    for seed in range(1000):
        seen, delays = _simulate(seed)
        changes += seen
        takeovers += delays
    assert changes > 1000, "the faults must make leadership change often, or the test shows nothing"
    assert len(takeovers) > 300
    takeovers.sort()
    median = takeovers[len(takeovers) // 2]
    assert TIMING.lease_duration * 0.98 <= median <= TIMING.lease_duration + 2 * TIMING.retry_period + 2


# ---- the campaign loop --------------------------------------------------------------------------------------


class FlakyStore:
    def __init__(self) -> None:
        self.record: LeaseRecord | None = None
        self.down = False
        self.hang = False

    def read(self) -> LeaseRecord | None:
        if self.down:
            raise ConnectionError("API server unreachable")
        if self.hang:
            time.sleep(2)
        return self.record

    def write(self, record: LeaseRecord) -> LeaseRecord:
        if self.down:
            raise ConnectionError("API server unreachable")
        self.record = replace(record, resource_version=str(int(record.resource_version or 0) + 1))
        return self.record


@pytest.mark.parametrize("failure", ["down", "hang"])
def test_a_leader_that_cannot_renew_stops_before_its_lease_can_expire(failure: str) -> None:
    timing = Timing(lease_duration=1.5, renew_deadline=0.6, retry_period=0.1)
    store = FlakyStore()
    leadership = Leadership(store, "a", timing)
    events: list[tuple[str, float]] = []

    async def scenario() -> None:
        loop = asyncio.get_running_loop()

        async def started() -> None:
            events.append(("started", loop.time()))
            await asyncio.sleep(0.3)
            setattr(store, failure, True)
            events.append(("failing", loop.time()))

        def lost() -> None:
            events.append(("lost", loop.time()))

        await asyncio.wait_for(leadership.run(started, lost), timeout=5)

    asyncio.run(scenario())
    kinds = [kind for kind, _ in events]
    assert kinds == ["started", "failing", "lost"]
    stopped_after = events[2][1] - events[1][1]
    # The last renewal started at most one retry period before the failure began.
    assert stopped_after <= timing.renew_deadline + 0.15, stopped_after
    assert stopped_after < timing.lease_duration
    assert not leadership.holds()


def test_a_leader_keeps_its_lease_while_reconciles_fill_the_default_executor() -> None:
    timing = Timing(lease_duration=1.5, renew_deadline=0.6, retry_period=0.1)
    leadership = Leadership(FlakyStore(), "a", timing)
    lost: list[bool] = []

    async def started() -> None:
        return None

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        loop.set_default_executor(concurrent.futures.ThreadPoolExecutor(max_workers=1))
        campaign = asyncio.create_task(leadership.run(started, lambda: lost.append(True)))
        await asyncio.sleep(0.2)
        # A second's worth of blocking reconciles, each queued behind the last in the one worker.
        await asyncio.gather(*(asyncio.to_thread(time.sleep, 0.1) for _ in range(10)))
        assert leadership.holds()
        campaign.cancel()

    asyncio.run(scenario())
    assert lost == []


def test_release_lets_a_standby_take_over_at_once() -> None:
    store = FlakyStore()
    a, b = Leadership(store, "a", TIMING), Leadership(store, "b", TIMING)
    assert a.attempt()
    assert not b.attempt()
    a.release()
    assert not a.holds()
    assert b.attempt()
    assert b.holds()
    assert store.record is not None
    assert store.record.transitions == 1


# ---- the operator while it stands by ---------------------------------------------------------------------------


def _body(name: str, version: int) -> dict[str, Any]:
    return {"metadata": {"namespace": "ns", "name": name, "uid": f"uid-{name}", "resourceVersion": str(version)}}


def test_a_standby_keeps_the_newest_bodies_and_starts_their_loops_when_it_leads(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    started: list[dict[str, Any]] = []

    class RecordingLoop:
        def __init__(self, operator: Any, body: dict[str, Any]) -> None:
            started.append(body)
            self.body = body

    monkeypatch.setattr(reconciler, "ResourceLoop", RecordingLoop)
    operator = reconciler.Operator(OperatorSettings(), kube=None, leading=False)  # type: ignore[arg-type]
    operator.observe("ADDED", _body("one", 5))
    operator.observe("MODIFIED", _body("one", 9))
    operator.observe("MODIFIED", _body("one", 7))  # an older event arriving late
    operator.observe("ADDED", _body("two", 3))
    operator.observe("DELETED", _body("two", 4))
    assert started == []
    operator.start_leading()
    assert [(b["metadata"]["name"], b["metadata"]["resourceVersion"]) for b in started] == [("one", "9")]
    assert set(operator.loops) == {"ns/one"}


def test_writes_are_refused_without_the_lease(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []

    class NoDynamic:
        def __init__(self, _: Any) -> None:
            pass

    monkeypatch.setattr(kube_module, "DynamicClient", NoDynamic)
    leading = False
    kube = Kube(ApiClient(), may_write=lambda: leading)

    def resource(*_: Any) -> None:
        calls.append("api")

    monkeypatch.setattr(kube, "_resource", resource)
    with pytest.raises(NotLeading):
        kube.apply({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}}, "ns")
    with pytest.raises(NotLeading):
        kube.write_status("ns", "x", {})
    with pytest.raises(NotLeading):
        kube.delete("ns", "v1", "ConfigMap", "x")
    assert calls == []
