"""How many tokens of KV cache this process may hold, and whether a batch's worst case fits in them.

The engine keeps one rectangular cache: every running sequence is a row, right-aligned, and the width is
the longest row's length; each decode step adds a column, and finished rows leave (with the columns only
they used). So a batch's cache at `t` steps from now is (rows still running) x (longest of them + t).
Its peak, over every `t` until the last row may finish, is what must fit: admitting on today's size alone
is how a burst of long prompts ends in an OOM kill several steps later.

The budget comes from the pod's memory limit (the cgroup's, else what the machine has available) minus
what the process already holds once the model is loaded, minus headroom for activations; the setting
MODELSHIP_KV_CACHE_TOKENS overrides it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HEADROOM_FRACTION = 0.2
MIN_HEADROOM_BYTES = 512 * 2**20
UNLIMITED = 2**60  # cgroup v1 writes a number this large for "no limit"


@dataclass(frozen=True)
class Row:
    """A sequence as the budget sees it: tokens in the cache now, and tokens it may still add."""

    length: int
    remaining: int


def peak_tokens(rows: Iterable[Row]) -> int:
    """The largest the cache can get before every row has finished: max over t of
    (rows with remaining >= t) x (their longest length + t). It peaks where a row may finish."""
    ordered = sorted(rows, key=lambda row: row.remaining, reverse=True)
    peak, longest = 0, 0
    for count, row in enumerate(ordered, start=1):
        longest = max(longest, row.length)
        # the `count` rows whose remaining is at least row.remaining, at t = row.remaining
        peak = max(peak, count * (longest + row.remaining))
    return peak


def bytes_per_token(config: Any, dtype_bytes: int) -> int:
    """Keys and values of one token across all layers, from a transformers config."""
    layers = _first(config, "num_hidden_layers", "n_layer", "num_layers")
    heads = _first(config, "num_attention_heads", "n_head")
    kv_heads = _first(config, "num_key_value_heads", "n_kv_heads") or heads
    hidden = _first(config, "hidden_size", "n_embd")
    head_dim = _first(config, "head_dim") or (hidden // heads if hidden and heads else 0)
    if not (layers and kv_heads and head_dim):
        raise ValueError("the model config does not say its layers, heads and head size")
    return 2 * layers * kv_heads * head_dim * dtype_bytes


def _first(config: Any, *names: str) -> int:
    for name in names:
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return 0


def memory_limit_bytes(cgroup: Path = Path("/sys/fs/cgroup")) -> int | None:
    """The cgroup's memory limit (v2, then v1); None when there is none."""
    for path in (cgroup / "memory.max", cgroup / "memory" / "memory.limit_in_bytes"):
        try:
            text = path.read_text().strip()
        except OSError:
            continue
        if text != "max" and text.isdigit() and int(text) < UNLIMITED:
            return int(text)
    return None


def available_bytes(meminfo: Path = Path("/proc/meminfo")) -> int | None:
    try:
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def resident_bytes(status: Path = Path("/proc/self/status")) -> int:
    try:
        for line in status.read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return 0
    return 0


def derive_tokens(limit: int | None, available: int | None, resident: int, per_token: int) -> int:
    """Tokens of KV that fit: under a limit, what it leaves beside what the process holds; without one,
    what the machine has available now; less headroom for activations either way."""
    if limit is not None:
        free = limit - resident
        total = limit
    elif available is not None:
        free = available
        total = available + resident
    else:
        raise ValueError("no memory limit and no MemAvailable: set MODELSHIP_KV_CACHE_TOKENS")
    free -= max(MIN_HEADROOM_BYTES, int(total * HEADROOM_FRACTION))
    return max(0, free // per_token)
