"""Decode attention over each row's own tokens.

The engine keeps a batch's KV cache left-padded to a shared right edge, so a decode step's attention over the
padded width reads every row's cache up to the widest row's length (with prompts of 20 to 1,000 tokens, about
twice the tokens there are), and SDPA's CPU kernel with a padding mask ran at a few GB/s. Here a decode step
attends row by row over exactly the row's real tokens (the rightmost `length` columns), unmasked: the same
call, on the same shapes, as the row decoding alone, so a sequence computes the same tokens alone or in a batch
by construction. Prefill and anything without row lengths go to transformers' own SDPA attention.

Registered with transformers' AttentionInterface; the engine passes `row_lengths` through the model's forward.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask

ROWS_ATTENTION = "modelship_rows"


def rows_attention_forward(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    row_lengths: list[int] | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """query (batch, heads, 1, dim) against key and value (batch, kv heads, width, dim), row r's tokens being the
    last row_lengths[r] columns; returns (batch, 1, heads, dim) as transformers' attention functions do."""
    if row_lengths is None or query.shape[2] != 1:
        return sdpa_attention_forward(
            module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs
        )
    width = key.shape[2]
    grouped = key.shape[1] != query.shape[1]  # query heads share key/value heads: read each once, not repeated
    out = torch.empty_like(query)
    attend = torch.nn.functional.scaled_dot_product_attention
    for row, length in enumerate(row_lengths):
        start = width - length
        keys, values = key[row : row + 1, :, start:], value[row : row + 1, :, start:]
        out[row : row + 1] = attend(query[row : row + 1], keys, values, scale=scaling, enable_gqa=grouped)
    return out.transpose(1, 2), None


def register() -> str:
    """Make ROWS_ATTENTION a name models can be set to (its masks are SDPA's); returns the name."""
    AttentionInterface.register(ROWS_ATTENTION, rows_attention_forward)
    ALL_MASK_ATTENTION_FUNCTIONS.register(ROWS_ATTENTION, sdpa_mask)
    return ROWS_ATTENTION
