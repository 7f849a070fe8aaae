"""In bfloat16 a batch is not bit-identical to a request alone (the rounding of a matmul depends on its
shape), so the guarantee is a stated tolerance: the chosen tokens' logprobs agree within LOGPROB_TOLERANCE
while the tokens agree, and where greedy picks differ, alone's top two were within TIE_MARGIN of each other."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
import torch

from model_runtime.engine import Finished, GenerationEngine, GenerationWork, TokenEvent
from model_runtime.model import Placement, load
from model_runtime.sampling import SamplingParams, TokenLogprobs
from tests.test_runtime_engine import TEXTS

LOGPROB_TOLERANCE = 0.1
TIE_MARGIN = 0.25


@pytest.fixture(scope="module")
def bf16_loaded(tiny_model_dir: Any) -> Any:
    return load(str(tiny_model_dir), "text-generation", Placement("cpu", torch.bfloat16))


def generate(loaded: Any, prompts: list[list[int]], tokens: int) -> list[list[TokenLogprobs]]:
    engine = GenerationEngine(loaded, 16, 5)
    results: list[list[TokenLogprobs]] = [[] for _ in prompts]
    done = [threading.Event() for _ in prompts]

    def sink(index: int) -> Any:
        def receive(event: Any) -> None:
            if isinstance(event, TokenEvent) and event.logprobs is not None:
                results[index].append(event.logprobs)
            elif isinstance(event, Finished):
                done[index].set()

        return receive

    params = SamplingParams(max_new_tokens=tokens, temperature=0.0, top_logprobs=2, ignore_eos=True)
    for index, prompt in enumerate(prompts):
        engine.submit(
            GenerationWork(sink=sink(index), deadline=time.monotonic() + 60, prompt_ids=prompt, params=params)
        )
    engine.start()
    try:
        assert all(event.wait(60) for event in done)
    finally:
        engine.stop()
    return results


def test_batched_bfloat16_agrees_with_alone_within_the_stated_tolerance(bf16_loaded: Any) -> None:
    prompts = [list(bf16_loaded.tokenizer.encode(text)) for text in TEXTS]
    alone = [generate(bf16_loaded, [prompt], 16)[0] for prompt in prompts]
    together = generate(bf16_loaded, prompts, 16)
    compared = 0
    for mine, theirs in zip(alone, together, strict=True):
        for own, batched in zip(mine, theirs, strict=True):
            chosen, runner_up = own.top[0], own.top[1]
            if own.top[0][0] != batched.top[0][0]:
                assert chosen[1] - runner_up[1] <= TIE_MARGIN, (own, batched)
                break
            assert abs(own.logprob - batched.logprob) <= LOGPROB_TOLERANCE, (own, batched)
            compared += 1
    assert compared >= len(prompts) * 8  # most positions are compared, not cut short by a tie
