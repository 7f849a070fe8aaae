"""Analyses of many ModelDeployments share their Prometheus queries.

The clock is cut into slots (a second by default). A look that falls due waits for the end of its slot,
and every look that fell due in the same slot goes out together: one query per SLI for the whole batch.
However many ModelDeployments a Prometheus serves, it sees at most one batch per slot (of at most
`MAX_LOOKS_PER_QUERY` looks each), so its query rate no longer grows with the fleet; a look waits at most
one slot. Each look's window is taken when the batch goes out, so waiting loses no data."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from . import metrics
from .analysis import Measurement
from .prometheus import Look
from .promql import RUNTIME, Source

MAX_LOOKS_PER_QUERY = 50
"""Bounds one query's text (about 300 bytes per look per SLI) and the work one Prometheus query does."""


def slot_end(now: float, slot_seconds: float) -> float:
    """When the batch of a look made at `now` goes out: the end of the slot `now` is in."""
    if slot_seconds <= 0:
        return now
    return (math.floor(now / slot_seconds) + 1) * slot_seconds


def chunks(items: Sequence[_Waiting], size: int) -> list[Sequence[_Waiting]]:
    return [items[start : start + size] for start in range(0, len(items), size)]


@dataclass(frozen=True)
class LookRequest:
    """A look whose window is not known until its batch goes out."""

    namespace: str
    name: str
    stable: str
    canary: str
    window_at: Callable[[datetime], float]
    with_drift: bool
    with_content: bool = False
    sources: tuple[Source, Source] = (RUNTIME, RUNTIME)  # stable's, canary's

    def at(self, now: datetime) -> Look:
        return Look(
            self.namespace,
            self.name,
            self.stable,
            self.canary,
            self.window_at(now),
            self.with_drift,
            self.with_content,
            self.sources,
        )


@dataclass(frozen=True)
class _Waiting:
    request: LookRequest
    answer: asyncio.Future[Measurement]


class AnalysisBatcher:
    """The batches of one Prometheus. `measure_many` is blocking and runs in a thread."""

    def __init__(
        self,
        measure_many: Callable[[Sequence[Look]], list[Measurement]],
        slot_seconds: float,
        max_looks: int = MAX_LOOKS_PER_QUERY,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._measure_many = measure_many
        self._slot = slot_seconds
        self._max_looks = max_looks
        self._clock = clock
        self._waiting: list[_Waiting] = []
        self._sender: asyncio.Task[None] | None = None

    async def measure(self, request: LookRequest) -> Measurement:
        answer: asyncio.Future[Measurement] = asyncio.get_running_loop().create_future()
        self._waiting.append(_Waiting(request, answer))
        if self._sender is None:
            now = self._clock()
            self._sender = asyncio.create_task(self._send_after(slot_end(now, self._slot) - now), name="analysis-batch")
        return await answer

    async def _send_after(self, delay: float) -> None:
        await asyncio.sleep(max(0.0, delay))
        batch, self._waiting, self._sender = self._waiting, [], None
        live = [waiting for waiting in batch if not waiting.answer.done()]  # a cancelled reconcile's look is dropped
        if not live:
            return
        now = datetime.fromtimestamp(self._clock(), UTC)
        parts = chunks(live, self._max_looks)
        results = await asyncio.gather(
            *(asyncio.to_thread(self._measure_many, [w.request.at(now) for w in part]) for part in parts),
            return_exceptions=True,
        )
        for part, result in zip(parts, results, strict=True):
            metrics.ANALYSIS_BATCH_LOOKS.observe(len(part))
            for index, waiting in enumerate(part):
                if waiting.answer.done():
                    continue
                if isinstance(result, asyncio.CancelledError):
                    waiting.answer.cancel()
                elif isinstance(result, BaseException):
                    waiting.answer.set_exception(result)
                else:
                    waiting.answer.set_result(result[index])
