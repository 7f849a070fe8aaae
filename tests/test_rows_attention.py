"""Row-by-row decode attention: each row attends over exactly its own (rightmost) tokens, with grouped
key/value heads, and gives what that row alone gives."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
import torch
from transformers.integrations.sdpa_attention import sdpa_attention_forward

from model_runtime.attention import ROWS_ATTENTION, rows_attention_forward

HEADS, KV_HEADS, DIM, WIDTH = 6, 2, 8, 12


def padded_batch(lengths: list[int], seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    query = torch.randn(len(lengths), HEADS, 1, DIM, generator=generator)
    key = torch.randn(len(lengths), KV_HEADS, WIDTH, DIM, generator=generator)
    value = torch.randn(len(lengths), KV_HEADS, WIDTH, DIM, generator=generator)
    for row, length in enumerate(lengths):  # left padding, as the engine lays a batch out
        key[row, :, : WIDTH - length] = float("nan")
        value[row, :, : WIDTH - length] = float("nan")
    return query, key, value


def reference(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, lengths: list[int]) -> torch.Tensor:
    """Plain softmax attention per row and query head, its key/value head repeated (transformers' order)."""
    rows = []
    for row, length in enumerate(lengths):
        heads = []
        for head in range(HEADS):
            kv = head // (HEADS // KV_HEADS)
            keys, values = key[row, kv, WIDTH - length :], value[row, kv, WIDTH - length :]
            weights = torch.softmax(query[row, head, 0] @ keys.T / DIM**0.5, dim=-1)
            heads.append(weights @ values)
        rows.append(torch.stack(heads))
    return torch.stack(rows).unsqueeze(1)  # (batch, 1, heads, dim)


MODULE: Any = SimpleNamespace(num_key_value_groups=HEADS // KV_HEADS, is_causal=True, training=False)


def attend(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, lengths: list[int] | None, **more: Any) -> Any:
    scale = DIM**-0.5
    out, weights = rows_attention_forward(MODULE, query, key, value, None, scaling=scale, row_lengths=lengths, **more)
    assert weights is None
    return out


@pytest.mark.parametrize("lengths", [[WIDTH], [3, WIDTH, 1, 7], [1, 1]])
def test_each_row_attends_over_its_own_tokens_only(lengths: list[int]) -> None:
    query, key, value = padded_batch(lengths)
    out = attend(query, key, value, lengths)
    assert out.shape == (len(lengths), 1, HEADS, DIM)
    assert not out.isnan().any(), "a padding column (NaN here) was read"
    torch.testing.assert_close(out, reference(query, key, value, lengths), rtol=1e-5, atol=1e-5)


def test_a_row_in_a_batch_computes_exactly_what_it_computes_alone() -> None:
    lengths = [3, WIDTH, 5]
    query, key, value = padded_batch(lengths, seed=1)
    together = attend(query, key, value, lengths)
    for row, length in enumerate(lengths):
        alone_key = key[row : row + 1, :, WIDTH - length :].clone()
        alone_value = value[row : row + 1, :, WIDTH - length :].clone()
        alone = attend(query[row : row + 1], alone_key, alone_value, [length])
        assert torch.equal(together[row : row + 1], alone)


def test_without_row_lengths_it_is_transformers_sdpa_attention() -> None:
    query, key, value = padded_batch([WIDTH, WIDTH])
    query = torch.cat([query, query], dim=2)  # two query positions: a prefill
    out = attend(query, key, value, None, is_causal=False)
    expected, _ = sdpa_attention_forward(MODULE, query, key, value, None, scaling=DIM**-0.5, is_causal=False)
    torch.testing.assert_close(out, expected)
    assert out.shape == (2, 2, HEADS, DIM)


def test_the_runtime_loads_a_causal_model_with_row_attention(tiny_loaded: Any) -> None:
    assert tiny_loaded.rows_attention
    assert tiny_loaded.model.config._attn_implementation == ROWS_ATTENTION
