"""Leader election on a coordination.k8s.io/v1 Lease, the protocol of client-go's leaderelection package.

Every replica campaigns; the one whose write of its identity into the Lease succeeds leads, and renews
the Lease every `retry_period`. Writes carry the Lease's resourceVersion, so of two replicas racing for
it only one can win. A standby takes the Lease over only after it has seen the same record, unchanged,
for the record's whole `leaseDurationSeconds`, timed on its own monotonic clock (clocks of different
machines are never compared). A leader stops acting `renew_deadline` after the start of its last
successful renewal, which is earlier than any standby can see that renewal expire: there is never a
moment at which two replicas both believe they lead.

`next_record` is the decision (pure, table-tested); `Leadership` runs it against a `LeaseStore`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Protocol

log = logging.getLogger("model_operator.leadership")

LEASE_THREADS = 2  # renewals run on threads of their own, never queued behind reconciles


@dataclass(frozen=True)
class LeaseRecord:
    """The Lease's spec, and the resourceVersion it was read at (None for a record not yet stored)."""

    holder: str
    duration_seconds: int
    acquire_time: datetime | None = None
    renew_time: datetime | None = None
    transitions: int = 0
    resource_version: str | None = None


@dataclass(frozen=True)
class Timing:
    """client-go's defaults. A leader gives up after `renew_deadline` without a renewal; a standby waits
    `lease_duration` after the last change it saw; both try every `retry_period`."""

    lease_duration: float = 15.0
    renew_deadline: float = 10.0
    retry_period: float = 2.0

    def __post_init__(self) -> None:
        if not 0 < self.retry_period < self.renew_deadline < self.lease_duration:
            raise ValueError(
                "leader election needs 0 < retry period < renew deadline < lease duration, got "
                f"{self.retry_period} / {self.renew_deadline} / {self.lease_duration}"
            )


def next_record(
    current: LeaseRecord | None, seen_for: float, identity: str, timing: Timing, now: datetime
) -> LeaseRecord | None:
    """The record to write to take or keep the Lease, or None while another replica holds it.

    `seen_for` is how long (on this replica's monotonic clock) the current record has been observed
    unchanged; a holder is taken over only when that exceeds the record's own lease duration."""
    # Whole seconds on the Lease, rounded up: a standby must never wait less than the configured duration,
    # or a renew deadline just under a fractional duration would no longer be safe.
    duration = max(1, math.ceil(timing.lease_duration))
    if current is None:
        return LeaseRecord(holder=identity, duration_seconds=duration, acquire_time=now, renew_time=now)
    if current.holder == identity:
        return replace(current, duration_seconds=duration, renew_time=now)
    if current.holder and seen_for < current.duration_seconds:
        return None
    return replace(
        current,
        holder=identity,
        duration_seconds=duration,
        acquire_time=now,
        renew_time=now,
        transitions=current.transitions + 1,
    )


class LeaseConflict(Exception):
    """The Lease changed since it was read (or was created by someone else): the write lost the race."""


class LeaseStore(Protocol):
    """Where the Lease lives; blocking calls. `write` creates the Lease for a record without a
    resourceVersion and replaces it at that resourceVersion otherwise, raising LeaseConflict when it
    moved on; other failures raise anything else."""

    def read(self) -> LeaseRecord | None: ...

    def write(self, record: LeaseRecord) -> LeaseRecord: ...


class Leadership:
    """One replica's campaign. `holds()` is the fence every write of the operator checks."""

    def __init__(
        self,
        store: LeaseStore,
        identity: str,
        timing: Timing | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.store = store
        self.identity = identity
        self.timing = timing or Timing()
        self.clock = clock
        self.wall = wall
        self.leading = False
        self._valid_until = 0.0
        self._observed: LeaseRecord | None = None
        self._observed_at = 0.0
        # Its own threads: renewals must not queue behind reconciles in the default executor, or a busy
        # operator would lose its lease to its own load.
        self._executor = ThreadPoolExecutor(max_workers=LEASE_THREADS, thread_name_prefix="lease")

    def holds(self) -> bool:
        """Whether this replica may act now: it led at its last renewal and the renew deadline since the
        start of that renewal has not passed."""
        return self.leading and self.clock() < self._valid_until

    def attempt(self) -> bool:
        """One try to take or renew the Lease (blocking). Whether this replica leads afterwards."""
        started = self.clock()
        try:
            current = self.store.read()
        except Exception as error:
            log.warning("cannot read the lease: %s", error)
            return self.holds()
        read_at = self.clock()
        if current != self._observed:
            # Timed from when it was seen, not when it was written: clocks of replicas are never compared.
            self._observed, self._observed_at = current, read_at
        wanted = next_record(current, read_at - self._observed_at, self.identity, self.timing, self.wall())
        if wanted is None:
            self.leading = False
            return False
        try:
            stored = self.store.write(wanted)
        except LeaseConflict:
            return self.holds()
        except Exception as error:
            log.warning("cannot write the lease: %s", error)
            return self.holds()
        self._observed, self._observed_at = stored, started
        self._valid_until = started + self.timing.renew_deadline
        self.leading = True
        return True

    def release(self) -> None:
        """Give the Lease up at shutdown, so a standby takes over at its next try instead of waiting for
        the lease to expire (client-go's ReleaseOnCancel). Best effort: the lease expires anyway."""
        if not self.holds() or self._observed is None:
            return
        self.leading = False
        with contextlib.suppress(Exception):
            self.store.write(replace(self._observed, holder="", duration_seconds=1, renew_time=self.wall()))
            log.info("released the lease")

    async def run(self, on_started: Callable[[], Awaitable[None]], on_lost: Callable[[], None]) -> None:
        """Campaign until leading, call `on_started`, then renew until a renewal misses the deadline or
        another replica holds the Lease, and call `on_lost` (which must stop this replica acting)."""
        while True:  # polling is the protocol: a Lease has no watch that would tell of its expiry
            if await self._attempt_in_time():
                break
            await asyncio.sleep(self.timing.retry_period)
        log.info("leading: %s holds the lease", self.identity)
        await on_started()
        while True:
            await asyncio.sleep(self.timing.retry_period)
            await self._attempt_in_time()
            if not self.holds():
                self.leading = False
                log.error(
                    "lost the lease: %s could not renew it within %.0f s", self.identity, self.timing.renew_deadline
                )
                on_lost()
                return

    async def _attempt_in_time(self) -> bool:
        """An attempt that gives up at the renew deadline: a hung API call must not keep the loop (and
        with it the decision to stop acting) waiting."""
        limit = max(self._valid_until - self.clock(), self.timing.retry_period)
        try:
            attempt = asyncio.get_running_loop().run_in_executor(self._executor, self.attempt)
            return await asyncio.wait_for(attempt, timeout=limit)
        except TimeoutError:
            return self.holds()
