"""The engine's KV cache layer: the same keys and values as concatenating and re-indexing the whole batch,
without moving the running sequences' cache on a step, a join or a leave."""

from __future__ import annotations

import random
from typing import Any

import pytest
import torch
from transformers.cache_utils import DynamicCache, DynamicLayer, DynamicSlidingWindowLayer

from model_runtime.kvcache import SPARE_COLUMNS, SPARE_ROWS, BatchLayer, batch_cache, compaction_order

HEADS, DIM = 2, 4


@pytest.mark.parametrize(
    ("rows", "leaving", "order"),
    [
        (5, [1], [0, 4, 2, 3]),  # the last row fills the hole
        (5, [4], [0, 1, 2, 3]),  # the last row leaves: nothing moves
        (5, [0, 1], [3, 4, 2]),
        (4, [3, 1], [0, 2]),
        (3, [0, 1, 2], []),
        (3, [], [0, 1, 2]),
    ],
)
def test_compaction_fills_holes_from_past_the_new_end(rows: int, leaving: list[int], order: list[int]) -> None:
    assert compaction_order(rows, leaving) == order
    assert all(source == row or source >= len(order) for row, source in enumerate(order))


def states(rows: int, width: int, generator: torch.Generator) -> torch.Tensor:
    return torch.randn(rows, HEADS, width, DIM, generator=generator)


def left_pad(tensor: torch.Tensor, width: int) -> torch.Tensor:
    missing = width - tensor.shape[-2]
    return (
        torch.cat([tensor.new_zeros(tensor.shape[0], HEADS, missing, DIM), tensor], dim=-2) if missing > 0 else tensor
    )


def live(layer: Any) -> tuple[torch.Tensor, torch.Tensor]:
    assert layer.keys is not None
    assert layer.values is not None
    return layer.keys, layer.values


class Reference:
    """The batch as the engine laid it out before: whole tensors concatenated and re-indexed."""

    def __init__(self, keys: torch.Tensor, values: torch.Tensor) -> None:
        self.keys, self.values = keys, values

    def step(self, keys: torch.Tensor, values: torch.Tensor) -> None:
        self.keys, self.values = torch.cat([self.keys, keys], -2), torch.cat([self.values, values], -2)

    def join(self, keys: torch.Tensor, values: torch.Tensor) -> None:
        width = max(self.keys.shape[-2], keys.shape[-2])
        self.keys = torch.cat([left_pad(self.keys, width), left_pad(keys, width)])
        self.values = torch.cat([left_pad(self.values, width), left_pad(values, width)])

    def select(self, order: list[int], dead: int) -> None:
        self.keys, self.values = self.keys[order][..., dead:, :], self.values[order][..., dead:, :]


@pytest.mark.parametrize("seed", range(25))
def test_random_steps_joins_and_leaves_match_the_reference(seed: int) -> None:
    chooser, generator = random.Random(seed), torch.Generator().manual_seed(seed)
    first = (states(3, 6, generator), states(3, 6, generator))
    layer, reference = BatchLayer.of(*first), Reference(*first)
    for _ in range(120):
        action = chooser.random()
        rows = reference.keys.shape[0]
        if action < 0.6 or rows == 0:
            if rows == 0:
                break
            new = (states(rows, 1, generator), states(rows, 1, generator))
            layer.update(*new)
            reference.step(*new)
        elif action < 0.8:
            width = chooser.randint(1, reference.keys.shape[-2] + 20)
            joining = chooser.randint(1, 3)
            new = (states(joining, width, generator), states(joining, width, generator))
            layer.join(*new)
            reference.join(*new)
        else:
            leaving = chooser.sample(range(rows), chooser.randint(1, rows))
            order = compaction_order(rows, leaving)
            dead = chooser.randint(0, 2) if order else 0
            if not order:
                break
            layer.select(order, dead)
            reference.select(order, dead)
        keys, values = live(layer)
        assert torch.equal(keys, reference.keys)
        assert torch.equal(values, reference.values)
        assert layer.get_seq_length() == reference.keys.shape[-2]


def test_steps_copy_the_cache_only_when_the_room_runs_out() -> None:
    generator = torch.Generator().manual_seed(0)
    layer = BatchLayer.of(states(4, 10, generator), states(4, 10, generator))
    copies = 0
    for _ in range(3 * SPARE_COLUMNS):
        before = layer.buffers
        layer.update(states(4, 1, generator), states(4, 1, generator))
        copies += layer.buffers is not before
    assert copies == 2  # a new buffer every SPARE_COLUMNS steps, not every step


def test_joins_into_spare_rows_and_leaves_do_not_reallocate() -> None:
    generator = torch.Generator().manual_seed(1)
    layer = BatchLayer.of(states(4, 30, generator), states(4, 30, generator))
    buffers = layer.buffers
    layer.join(states(SPARE_ROWS, 12, generator), states(SPARE_ROWS, 12, generator))  # shorter: right-aligned
    layer.select(compaction_order(layer.rows, [0, 5]), dead_columns=4)  # room on the left again
    layer.join(states(2, 30, generator), states(2, 30, generator))  # longer than the live 26: widens left
    assert layer.buffers is buffers
    assert layer.keys.shape == (8, HEADS, 30, DIM)


def test_only_caches_of_plain_layers_are_converted() -> None:
    generator = torch.Generator().manual_seed(2)
    plain = DynamicCache()
    plain.layers = [DynamicLayer(), DynamicLayer()]
    for cache_layer in plain.layers:
        cache_layer.update(states(2, 3, generator), states(2, 3, generator))
    before = [cache_layer.keys.clone() for cache_layer in plain.layers]
    assert batch_cache(plain)
    assert all(isinstance(cache_layer, BatchLayer) for cache_layer in plain.layers)
    assert all(torch.equal(live(c)[0], b) for c, b in zip(plain.layers, before, strict=True))
    sliding = DynamicCache()
    sliding.layers = [DynamicSlidingWindowLayer(sliding_window=4)]
    sliding.layers[0].update(states(2, 3, generator), states(2, 3, generator))
    assert not batch_cache(sliding)
    assert isinstance(sliding.layers[0], DynamicSlidingWindowLayer)
