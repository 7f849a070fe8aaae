"""The engine's KV cache: per layer, buffers with spare rows and columns, so that neither a decode step nor
a sequence joining or leaving moves the cache of the sequences already running.

transformers' DynamicLayer appends each step with `torch.cat`, copying the whole batch's cache every step
(at 32 sequences of a few hundred tokens that is more memory traffic than the model's weights), and a
batch that changes had to be concatenated or re-indexed as a whole. Here the live cache of a layer is the
region `buffer[:rows, :, lo:hi]` (sequences left-padded to a shared right edge, as the engine lays them
out):

- a decode step writes column `hi` and widens the region;
- sequences that join are written into spare rows, right-aligned; a longer prompt than the batch's widens
  the region to the left, into room left by sequences that finished;
- sequences that leave are replaced by the last rows (only those rows move), and columns no row uses any
  more are dropped by moving `lo`.

Only when the room runs out is the live region copied into a bigger buffer (every SPARE_COLUMNS steps
at most, or when more rows join than there is room for). The attention reads a strided view; no copy.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers.cache_utils import DynamicLayer

SPARE_COLUMNS = 64  # room added on the right per copy: a copy every this many steps at most
SPARE_ROWS = 4  # room for sequences joining without a copy


def compaction_order(rows: int, leaving: list[int]) -> list[int]:
    """The rows that stay, in their new order: each row that leaves is filled by a staying row from past
    the new end, the others keep their place. Moving rows in this order never overwrites a row still to
    be moved."""
    gone = set(leaving)
    kept = rows - len(gone & set(range(rows)))
    holes = [row for row in range(kept) if row in gone]
    movers = [row for row in range(kept, rows) if row not in gone]
    order = list(range(kept))
    for hole, mover in zip(holes, movers, strict=True):
        order[hole] = mover
    return order


class BatchLayer(DynamicLayer):  # type: ignore[no-untyped-call]  # transformers' layer is untyped
    """One layer's keys and values for the engine's batch; `keys` and `values` are views of the live region."""

    def __init__(self) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.buffers: tuple[torch.Tensor, torch.Tensor] | None = None
        self.rows = self.lo = self.hi = 0

    @classmethod
    def of(cls, keys: torch.Tensor, values: torch.Tensor) -> BatchLayer:
        """A layer holding a prefill's keys and values (batch, heads, width, dim)."""
        layer = cls()
        layer.dtype, layer.device, layer.is_initialized = keys.dtype, keys.device, True
        layer._allocate(keys, values, keys.shape[0], keys.shape[-2], SPARE_COLUMNS)
        return layer

    # ---- what the model calls -------------------------------------------------------------------------
    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        assert self.buffers is not None, "a BatchLayer starts from a prefill (BatchLayer.of)"
        added = key_states.shape[-2]
        if self.hi + added > self.buffers[0].shape[-2]:
            self._allocate(*self._live(), self.rows, self.hi - self.lo, added + SPARE_COLUMNS)
        for buffer, states in zip(self.buffers, (key_states, value_states), strict=True):
            buffer[: self.rows, :, self.hi : self.hi + added] = states
        self.hi += added
        self._expose()
        return self.keys, self.values

    # ---- what the engine calls ------------------------------------------------------------------------
    def join(self, keys: torch.Tensor, values: torch.Tensor) -> None:
        """Add a prefill's sequences (its keys and values, padding zeroed) as the last rows."""
        assert self.buffers is not None
        joining, width = keys.shape[0], keys.shape[-2]
        extra = width - (self.hi - self.lo)
        fits = self.rows + joining <= self.buffers[0].shape[0]
        if extra > 0 and self.lo >= extra and fits:  # a longer prompt: widen to the left, into free room
            self.lo -= extra
            for buffer in self.buffers:
                buffer[: self.rows, :, self.lo : self.lo + extra] = 0
        elif extra > 0 or not fits:
            self._allocate(*self._live(), self.rows + joining, max(width, self.hi - self.lo), SPARE_COLUMNS)
        start = self.rows
        self.rows += joining
        for buffer, states in zip(self.buffers, (keys, values), strict=True):
            buffer[start : self.rows, :, self.lo : self.hi - width] = 0
            buffer[start : self.rows, :, self.hi - width : self.hi] = states
        self._expose()

    def select(self, order: list[int], dead_columns: int) -> None:
        """Keep the rows of `order` (from compaction_order) and drop the first `dead_columns` columns."""
        assert self.buffers is not None
        for row, source in enumerate(order):
            if source != row:
                assert source >= len(order), "compaction_order moves rows from past the new end only"
                for buffer in self.buffers:
                    buffer[row, :, self.lo : self.hi] = buffer[source, :, self.lo : self.hi]
        self.rows = len(order)
        self.lo += dead_columns
        self._expose()

    # ---- storage ------------------------------------------------------------------------------------
    def _allocate(self, keys: torch.Tensor, values: torch.Tensor, rows: int, width: int, room: int) -> None:
        """New buffers for `rows` rows (plus SPARE_ROWS) and `width` columns (plus `room` on the right); the
        given live region is copied in right-aligned to column `width`, zeros to its left."""
        live_rows, live_width = keys.shape[0], keys.shape[-2]
        heads, dim = keys.shape[1], keys.shape[-1]
        buffers = []
        for states in (keys, values):
            buffer = states.new_empty((rows + SPARE_ROWS, heads, width + room, dim))
            buffer[:live_rows, :, : width - live_width] = 0
            buffer[:live_rows, :, width - live_width : width] = states
            buffers.append(buffer)
        self.buffers = (buffers[0], buffers[1])
        self.rows, self.lo, self.hi = live_rows, 0, width
        self._expose()

    def _live(self) -> tuple[torch.Tensor, torch.Tensor]:
        assert self.buffers is not None
        keys, values = self.buffers
        return keys[: self.rows, :, self.lo : self.hi], values[: self.rows, :, self.lo : self.hi]

    def _expose(self) -> None:
        self.keys, self.values = self._live()


def batch_cache(cache: Any) -> bool:
    """Turn a prefill's cache into BatchLayers in place; False (and the cache untouched) when a layer is of
    another kind (sliding windows, linear attention): the engine then keeps concatenating."""
    layers = getattr(cache, "layers", None)
    if not layers or any(type(layer) is not DynamicLayer for layer in layers):
        return False
    cache.layers = [BatchLayer.of(layer.keys, layer.values) for layer in layers]
    return True
