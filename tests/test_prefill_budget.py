"""Prefill within a per-cycle token budget: a burst joins over several steps, a long prompt is read in
pieces between decode steps, and neither changes what anyone generates."""

from __future__ import annotations

import threading
import time
from typing import Any

import torch

from model_runtime.engine import Finished, GenerationEngine, GenerationWork, TokenEvent
from model_runtime.sampling import SamplingParams
from tests.test_runtime_engine import TEXTS, prompts_of, run_all

LONG = " ".join(["the canary takes a share of the traffic while the stable keeps the rest"] * 6)


def long_prompt(loaded: Any) -> list[int]:
    prompt = list(loaded.tokenizer.encode(LONG))
    assert len(prompt) > 64
    return prompt


def test_a_long_prompt_read_in_pieces_generates_the_same_tokens(tiny_loaded: Any) -> None:
    prompt = long_prompt(tiny_loaded)
    greedy = [SamplingParams(max_new_tokens=16, temperature=0.0)]
    whole = run_all(tiny_loaded, [prompt], greedy, prefill_tokens=4096)
    pieces = run_all(tiny_loaded, [prompt], greedy, prefill_tokens=16)
    assert whole[0][0] == pieces[0][0]
    assert whole[0][1] == pieces[0][1]


def test_pieces_match_one_pass_within_float_tolerance(tiny_loaded: Any) -> None:
    """The same logits, up to the rounding of different matmul shapes (float32)."""
    prompt = torch.tensor([long_prompt(tiny_loaded)])
    model = tiny_loaded.model
    with torch.no_grad():
        whole = model(input_ids=prompt).logits[0, -1]
        cache = None
        for start in range(0, prompt.shape[1], 16):
            piece = prompt[:, start : start + 16]
            positions = torch.arange(start, start + piece.shape[1]).unsqueeze(0)
            out = model(input_ids=piece, position_ids=positions, past_key_values=cache, use_cache=True)
            cache = out.past_key_values
        assert torch.allclose(out.logits[0, -1], whole, atol=1e-4, rtol=1e-4)


def test_batched_with_a_long_prompt_in_pieces_equals_alone(tiny_loaded: Any) -> None:
    prompts = [long_prompt(tiny_loaded), *prompts_of(tiny_loaded, TEXTS)]
    greedy = [SamplingParams(max_new_tokens=10 + i, temperature=0.0) for i in range(len(prompts))]
    alone = [run_all(tiny_loaded, [p], [g], prefill_tokens=16)[0] for p, g in zip(prompts, greedy, strict=True)]
    together = run_all(tiny_loaded, prompts, greedy, prefill_tokens=16)
    staggered = run_all(tiny_loaded, prompts, greedy, stagger=0.01, prefill_tokens=16)
    assert [a[0] for a in alone] == [t[0] for t in together] == [s[0] for s in staggered]


def test_running_sequences_keep_generating_while_a_long_prompt_is_read(tiny_loaded: Any) -> None:
    """The order tokens come out in: the running sequence's between the long prompt's arrival and its
    first token, one per piece read."""
    engine = GenerationEngine(tiny_loaded, 8, 1, prefill_tokens=8)
    order: list[str] = []
    done = {name: threading.Event() for name in ("short", "long")}

    def sink(name: str) -> Any:
        def receive(event: Any) -> None:
            if isinstance(event, TokenEvent):
                order.append(name)
            elif isinstance(event, Finished):
                done[name].set()

        return receive

    prompt = long_prompt(tiny_loaded)
    engine.start()
    try:
        short = SamplingParams(max_new_tokens=200, temperature=0.0, ignore_eos=True)
        first = list(tiny_loaded.tokenizer.encode("a"))
        engine.submit(
            GenerationWork(sink=sink("short"), deadline=time.monotonic() + 60, prompt_ids=first, params=short)
        )
        deadline = time.monotonic() + 30
        while not order and time.monotonic() < deadline:
            time.sleep(0.001)
        long = SamplingParams(max_new_tokens=2, temperature=0.0, ignore_eos=True)
        submitted_at = len(order)
        engine.submit(GenerationWork(sink=sink("long"), deadline=time.monotonic() + 60, prompt_ids=prompt, params=long))
        assert done["long"].wait(30)
        assert done["short"].wait(30)
    finally:
        engine.stop()
    pieces = -(-len(prompt) // 8)
    interleaved = order[submitted_at : order.index("long")].count("short")
    assert interleaved >= pieces - 1, (interleaved, pieces)


def test_a_burst_of_prompts_is_prefilled_in_groups_within_the_budget(tiny_loaded: Any) -> None:
    sizes: list[int] = []

    class Recorder:
        def batch(self, size: int) -> None:
            sizes.append(size)

        def __getattr__(self, name: str) -> Any:
            return lambda *args: None

    engine = GenerationEngine(tiny_loaded, 16, 50, metrics=Recorder(), prefill_tokens=16)
    prompts = [list(tiny_loaded.tokenizer.encode("one two three four five six seven")) for _ in range(8)]
    width = len(prompts[0])
    finished = threading.Semaphore(0)

    def sink(event: Any) -> None:
        if isinstance(event, Finished):
            finished.release()

    for prompt in prompts:  # queued before the engine starts: one cycle takes them all
        three = SamplingParams(max_new_tokens=3)
        engine.submit(GenerationWork(sink=sink, deadline=time.monotonic() + 60, prompt_ids=prompt, params=three))
    engine.start()
    try:
        for _ in prompts:
            assert finished.acquire(timeout=30)
    finally:
        engine.stop()
    group = max(1, 16 // width)
    assert sizes[0] == group  # the first cycle prefills only what fits the budget
    assert max(sizes) <= 8
