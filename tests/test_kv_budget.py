"""The KV-cache budget: the worst-case arithmetic against a step-by-step simulation, the budget from the
cgroup, and a runtime under a small budget taking a burst of long prompts."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path
from typing import Any

import pytest
from transformers import GPT2Config, LlamaConfig

from model_runtime.contract import KV_CACHE_CAPACITY, KV_CACHE_USAGE
from model_runtime.kvbudget import (
    MIN_HEADROOM_BYTES,
    Row,
    bytes_per_token,
    derive_tokens,
    memory_limit_bytes,
    peak_tokens,
)
from tests.metrics_helpers import sample
from tests.runtime_helpers import running_app


def simulated_peak(rows: list[Row]) -> int:
    """The engine's cache step by step: rows x the longest running row, each step one token longer,
    each row gone once its remaining tokens are spent (the earliest it may finish is the latest)."""
    peak, step = 0, 0
    while True:
        running = [row for row in rows if row.remaining >= step]
        if not running:
            return peak
        peak = max(peak, len(running) * (max(row.length for row in running) + step))
        step += 1


@pytest.mark.parametrize("seed", range(300))
def test_the_peak_is_the_simulated_worst_case(seed: int) -> None:
    chance = random.Random(seed)
    rows = [Row(chance.randint(1, 60), chance.randint(0, 40)) for _ in range(chance.randint(1, 12))]
    assert peak_tokens(rows) == simulated_peak(rows)


def test_no_rows_hold_nothing() -> None:
    assert peak_tokens([]) == 0


@pytest.mark.parametrize(
    ("config", "dtype_bytes", "expected"),
    [
        (GPT2Config(n_layer=2, n_head=2, n_embd=64), 4, 2 * 2 * 2 * 32 * 4),
        # grouped-query attention: only the key-value heads are cached
        (
            LlamaConfig(num_hidden_layers=4, num_attention_heads=8, num_key_value_heads=2, hidden_size=256),
            2,
            2 * 4 * 2 * 32 * 2,
        ),
    ],
)
def test_bytes_per_token(config: Any, dtype_bytes: int, expected: int) -> None:
    assert bytes_per_token(config, dtype_bytes) == expected


@pytest.mark.parametrize(
    ("files", "limit"),
    [
        ({"memory.max": "max\n"}, None),
        ({"memory.max": "4294967296\n"}, 4 * 2**30),
        ({"memory/memory.limit_in_bytes": "9223372036854771712\n"}, None),  # v1's "no limit"
        ({"memory/memory.limit_in_bytes": "1073741824\n"}, 2**30),
        ({}, None),
    ],
)
def test_the_memory_limit_comes_from_the_cgroup(tmp_path: Path, files: dict[str, str], limit: int | None) -> None:
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    assert memory_limit_bytes(tmp_path) == limit


def test_the_budget_is_what_the_limit_leaves_beside_the_process_and_headroom() -> None:
    gib = 2**30
    assert derive_tokens(4 * gib, None, gib, 1024) == (3 * gib - int(4 * gib * 0.2)) // 1024
    assert derive_tokens(gib, None, gib // 2, 1024) == (gib // 2 - MIN_HEADROOM_BYTES) // 1024
    assert derive_tokens(gib, None, gib, 1024) == 0  # nothing left: admits nothing rather than crash later
    assert derive_tokens(None, 8 * gib, gib, 1024) == (8 * gib - int(9 * gib * 0.2)) // 1024
    with pytest.raises(ValueError, match="MODELSHIP_KV_CACHE_TOKENS"):
        derive_tokens(None, None, gib, 1024)


LONG_PROMPT = "the quick brown fox jumps over the lazy dog " * 4
CAPACITY = 220
BURST = 12


async def test_a_burst_of_long_prompts_under_a_small_budget_is_served_within_it(tiny_loaded: Any) -> None:
    body = {"model": "model", "prompt": LONG_PROMPT, "max_tokens": 24, "temperature": 0}
    async with running_app(tiny_loaded) as (client, _):
        alone = await (await client.post("/v1/completions", json=body)).json()
    prompt_tokens = alone["usage"]["prompt_tokens"]
    assert CAPACITY // (prompt_tokens + 24) < BURST  # the burst cannot all run at once; the batch (16) could

    async with running_app(tiny_loaded, kv_cache_tokens=CAPACITY) as (client, dataplane):
        responses = await asyncio.gather(*(client.post("/v1/completions", json=body) for _ in range(BURST)))
        answers = [await response.json() for response in responses]
        metrics = await (await client.get("/metrics")).text()
        engine: Any = dataplane.engine
        too_big = await client.post("/v1/completions", json={**body, "max_tokens": CAPACITY})
        refusal = await too_big.json()
        after = await client.post("/v1/completions", json=body)
    assert [r.status for r in responses] == [200] * BURST
    assert {a["choices"][0]["text"] for a in answers} == {alone["choices"][0]["text"]}  # batched equals alone
    assert 0 < engine.peak_cache_tokens <= CAPACITY
    assert sample(metrics, KV_CACHE_CAPACITY) == CAPACITY
    usage = sample(metrics, KV_CACHE_USAGE)
    assert usage is not None
    assert 0 <= usage <= 1
    assert too_big.status == 400
    assert "tokens of KV cache; this server holds 220" in refusal["error"]["message"]
    assert after.status == 200  # and it goes on serving


async def test_usage_reports_the_share_of_the_budget_held_while_generating(tiny_loaded: Any) -> None:
    body = {"model": "model", "prompt": LONG_PROMPT, "max_tokens": 64, "temperature": 0, "stream": True}
    async with running_app(tiny_loaded, kv_cache_tokens=1000) as (client, _dataplane):
        response = await client.post("/v1/completions", json=body)
        await response.content.readline()  # the first token is out: the sequence holds its cache
        seen: list[float] = []
        for _ in range(200):  # bounded: the engine records usage at the end of each cycle
            usage = sample(await (await client.get("/metrics")).text(), KV_CACHE_USAGE)
            if usage:
                seen.append(usage)
                break
            await asyncio.sleep(0.01)
        await response.read()
    assert seen, "no usage was reported while a sequence was generating"
    assert 0.03 < seen[0] <= 0.2  # one sequence of ~40-100 tokens in a budget of 1,000
