"""The batching engine: batched greedy equals alone, seeds reproduce, stop rules hold per sequence."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
import torch

from model_runtime.engine import PREFILL_TOKENS, Finished, GenerationEngine, GenerationWork, TokenEvent
from model_runtime.errors import ApiError
from model_runtime.sampling import SamplingParams, choose, nucleus_filter


def run_all(
    loaded: Any,
    prompts: list[list[int]],
    params: list[SamplingParams],
    max_batch: int = 16,
    stagger: float = 0.0,
    prefill_tokens: int = PREFILL_TOKENS,
) -> list[tuple[list[int], str, str]]:
    """Submit every prompt (optionally staggered so later ones join a running batch); collect results."""
    engine = GenerationEngine(loaded, max_batch, 5, prefill_tokens=prefill_tokens)
    engine.start()
    results: list[dict[str, Any]] = [{"ids": [], "text": "", "done": threading.Event()} for _ in prompts]

    def sink_for(slot: dict[str, Any]) -> Any:
        def sink(event: Any) -> None:
            if isinstance(event, TokenEvent):
                if event.token_id >= 0:
                    slot["ids"].append(event.token_id)
                slot["text"] += event.text
            else:
                slot["end"] = event
                slot["done"].set()

        return sink

    try:
        for prompt, param, slot in zip(prompts, params, results, strict=True):
            engine.submit(
                GenerationWork(sink=sink_for(slot), deadline=time.monotonic() + 60, prompt_ids=prompt, params=param)
            )
            time.sleep(stagger)
        for slot in results:
            assert slot["done"].wait(60)
    finally:
        engine.stop()
    out = []
    for slot in results:
        end = slot["end"]
        assert isinstance(end, Finished), end
        out.append((slot["ids"], slot["text"], end.finish_reason))
    return out


def prompts_of(loaded: Any, texts: list[str]) -> list[list[int]]:
    return [list(loaded.tokenizer.encode(t)) for t in texts]


TEXTS = [
    "hello world",
    "the quick brown fox jumps over",
    "a",
    "kubernetes runs pods on nodes and a deployment",
    "prometheus",
    "Bonjour le monde, comment allez-vous?",
    "0123456789",
    "the canary takes a share",
]


def test_batched_greedy_equals_alone(tiny_loaded: Any) -> None:
    prompts = prompts_of(tiny_loaded, TEXTS)
    greedy = [SamplingParams(max_new_tokens=12 + i, temperature=0.0) for i in range(len(prompts))]
    alone = [run_all(tiny_loaded, [p], [g])[0] for p, g in zip(prompts, greedy, strict=True)]
    together = run_all(tiny_loaded, prompts, greedy)
    staggered = run_all(tiny_loaded, prompts, greedy, stagger=0.01)  # joining a running batch mid-decode
    assert [a[0] for a in alone] == [t[0] for t in together]
    assert [a[0] for a in alone] == [s[0] for s in staggered]
    assert all(len(a[0]) == 12 + i for i, a in enumerate(alone))


def test_greedy_matches_transformers_generate(tiny_loaded: Any) -> None:
    prompt = prompts_of(tiny_loaded, ["the quick brown fox"])[0]
    ours = run_all(tiny_loaded, [prompt], [SamplingParams(max_new_tokens=10, temperature=0.0)])[0][0]
    with torch.no_grad():
        reference = tiny_loaded.model.generate(
            torch.tensor([prompt]), max_new_tokens=10, do_sample=False, eos_token_id=None, pad_token_id=0
        )[0, len(prompt) :].tolist()
    assert ours == reference


def test_same_seed_same_sample_whatever_the_batch(tiny_loaded: Any) -> None:
    prompts = prompts_of(tiny_loaded, TEXTS)
    seeded = SamplingParams(max_new_tokens=10, temperature=1.0, top_p=0.9, seed=42)
    alone = run_all(tiny_loaded, [prompts[0]], [seeded])[0][0]
    others = [SamplingParams(max_new_tokens=10, temperature=1.0, seed=i) for i in range(1, len(prompts))]
    batched = run_all(tiny_loaded, prompts, [seeded, *others])[0][0]
    different_seed = run_all(
        tiny_loaded, [prompts[0]], [SamplingParams(max_new_tokens=10, temperature=1.0, top_p=0.9, seed=43)]
    )[0][0]
    assert alone == batched
    assert alone != different_seed


def test_stop_string_ends_only_its_own_sequence(tiny_loaded: Any) -> None:
    prompts = prompts_of(tiny_loaded, ["hello world", "hello world"])
    free = run_all(tiny_loaded, [prompts[0]], [SamplingParams(max_new_tokens=12, temperature=0.0)])[0]
    stop_word = free[1][4:7]  # three characters from the middle of what greedy writes
    assert stop_word
    results = run_all(
        tiny_loaded,
        prompts,
        [
            SamplingParams(max_new_tokens=12, temperature=0.0, stop=(stop_word,)),
            SamplingParams(max_new_tokens=12, temperature=0.0),
        ],
    )
    stopped, untouched = results
    assert stopped[2] == "stop"
    assert stop_word not in stopped[1]
    assert free[1].startswith(stopped[1])
    assert untouched[0] == free[0]
    assert untouched[2] == "length"


def test_max_tokens_one(tiny_loaded: Any) -> None:
    prompts = prompts_of(tiny_loaded, TEXTS[:3])
    results = run_all(tiny_loaded, prompts, [SamplingParams(max_new_tokens=1, temperature=0.0)] * 3)
    assert all(len(r[0]) == 1 and r[2] == "length" for r in results)


def test_end_of_text_stops_with_reason_stop(tiny_loaded: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    prompt = prompts_of(tiny_loaded, ["hello world"])[0]
    first = run_all(tiny_loaded, [prompt], [SamplingParams(max_new_tokens=6, temperature=0.0)])[0][0]
    # Pretend the third greedy token is end-of-text: generation must stop there, without it.
    monkeypatch.setattr(tiny_loaded, "eos_token_ids", frozenset({first[2]}))
    ids, _, reason = run_all(tiny_loaded, [prompt], [SamplingParams(max_new_tokens=6, temperature=0.0)])[0]
    assert reason == "stop"
    assert ids == first[:2]
    # The router's mirror probes ask to go on past end-of-text, to compare distributions at every position.
    params = SamplingParams(max_new_tokens=6, temperature=0.0, ignore_eos=True)
    ids, _, reason = run_all(tiny_loaded, [prompt], [params])[0]
    assert reason == "length"
    assert ids == first


def test_nucleus_filter_keeps_the_smallest_head() -> None:
    probs = torch.tensor([0.5, 0.3, 0.15, 0.05])
    assert nucleus_filter(probs, 0.7).tolist() == pytest.approx([0.625, 0.375, 0.0, 0.0])
    assert nucleus_filter(probs, 0.1).tolist() == pytest.approx([1.0, 0.0, 0.0, 0.0])
    assert nucleus_filter(probs, 1.0).tolist() == pytest.approx(probs.tolist())
    # A top_p that underflows to 0 in float32 still keeps the most likely token (schemathesis found it).
    assert nucleus_filter(probs, 5e-324).tolist() == pytest.approx([1.0, 0.0, 0.0, 0.0])


def test_choose_greedy_rows_take_the_argmax() -> None:
    logits = torch.tensor([[0.0, 5.0, 1.0], [3.0, 0.0, 0.0]])
    params = [SamplingParams(max_new_tokens=1, temperature=0.0)] * 2
    chosen, failed = choose(logits, params, [None, None])
    assert chosen.tolist() == [1, 0]
    assert failed == {}


@pytest.mark.parametrize(
    ("logits", "param", "why"),
    [
        ([0.0, float("nan"), 1.0], SamplingParams(max_new_tokens=1, temperature=0.0), "non-finite logits"),
        ([0.0, 5.0, 1.0], SamplingParams(max_new_tokens=1, temperature=float("nan")), "must be finite"),
        ([0.0, 5.0, 1.0], SamplingParams(max_new_tokens=1, temperature=1.0, top_p=float("nan")), "must be finite"),
        ([0.0, 5.0, float("inf")], SamplingParams(max_new_tokens=1, temperature=1.0), "non-finite logits"),
    ],
)
def test_a_row_that_cannot_be_sampled_fails_alone(logits: list[float], param: SamplingParams, why: str) -> None:
    batch = torch.tensor([logits, [3.0, 0.0, 0.0]])
    chosen, failed = choose(batch, [param, SamplingParams(max_new_tokens=1, temperature=0.0)], [None, None])
    assert list(failed) == [0]
    assert why in failed[0]
    assert int(chosen[1]) == 0  # the healthy row still gets its argmax


def test_a_tiny_temperature_is_greedy() -> None:
    """1e-45 would overflow the logits to inf and make the softmax NaN; vLLM treats below 1e-5 as greedy."""
    logits = torch.tensor([[0.0, 5.0, 1.0]])
    chosen, failed = choose(logits, [SamplingParams(max_new_tokens=1, temperature=1e-45)], [None])
    assert (chosen.tolist(), failed) == ([1], {})


def run_with_errors(loaded: Any, prompts: list[list[int]], params: list[SamplingParams]) -> list[Any]:
    """Like run_all, but a sequence may end in an error: each slot's token ids, or the ApiError."""
    engine = GenerationEngine(loaded, 16, 5)
    engine.start()
    slots: list[dict[str, Any]] = [{"ids": [], "done": threading.Event()} for _ in prompts]

    def sink_for(slot: dict[str, Any]) -> Any:
        def sink(event: Any) -> None:
            if isinstance(event, TokenEvent):
                if event.token_id >= 0:
                    slot["ids"].append(event.token_id)
            else:
                slot["end"] = event
                slot["done"].set()

        return sink

    try:
        for prompt, param, slot in zip(prompts, params, slots, strict=True):
            work = GenerationWork(sink=sink_for(slot), deadline=time.monotonic() + 60, prompt_ids=prompt, params=param)
            engine.submit(work)
        for slot in slots:
            assert slot["done"].wait(60)
    finally:
        engine.stop()
    return [slot["ids"] if isinstance(slot["end"], Finished) else slot["end"] for slot in slots]


@pytest.mark.parametrize(
    "poison",
    [
        SamplingParams(max_new_tokens=12, temperature=float("nan")),  # NaN probabilities mid-decode
        SamplingParams(max_new_tokens=12, temperature=1.0, seed=2**64),  # a seed torch refuses
    ],
)
def test_a_poisoned_request_ends_alone_and_its_batch_is_token_identical(
    tiny_loaded: Any, poison: SamplingParams
) -> None:
    prompts = prompts_of(tiny_loaded, TEXTS[:4])
    good = [
        SamplingParams(max_new_tokens=12, temperature=0.0),
        SamplingParams(max_new_tokens=12, temperature=0.9, top_p=0.9, seed=7),
        SamplingParams(max_new_tokens=12, temperature=0.0),
    ]
    alone = run_with_errors(tiny_loaded, prompts[:3], good)
    mixed = run_with_errors(tiny_loaded, [prompts[0], prompts[3], prompts[1], prompts[2]], [good[0], poison, *good[1:]])
    assert isinstance(mixed[1], ApiError)
    assert mixed[1].status in (400, 500)
    assert [mixed[0], mixed[2], mixed[3]] == alone


def test_a_neighbours_penalties_and_bias_leave_a_batch_token_identical(tiny_loaded: Any) -> None:
    """Logit shaping is per sequence: a request with every control set changes no other's tokens."""
    prompts = prompts_of(tiny_loaded, TEXTS[:4])
    good = [
        SamplingParams(max_new_tokens=12, temperature=0.0),
        SamplingParams(max_new_tokens=12, temperature=0.9, top_p=0.9, seed=7),
        SamplingParams(max_new_tokens=12, temperature=0.0),
    ]
    shaped = SamplingParams(
        max_new_tokens=12, temperature=0.8, seed=1, top_k=5, min_p=0.1, repetition_penalty=1.5,
        frequency_penalty=1.0, presence_penalty=0.5, logit_bias=((7, 5.0),), min_tokens=4, stop_token_ids=(9,),
    )  # fmt: skip
    alone = run_with_errors(tiny_loaded, prompts[:3], good)
    mixed = run_with_errors(tiny_loaded, [prompts[0], prompts[3], prompts[1], prompts[2]], [good[0], shaped, *good[1:]])
    assert isinstance(mixed[1], list)
    assert len(mixed[1]) >= 4
    assert [mixed[0], mixed[2], mixed[3]] == alone


def test_a_json_mode_neighbour_leaves_a_batch_token_identical(tiny_loaded: Any) -> None:
    """The grammar mask is per sequence: a JSON-mode request changes no other's tokens, and its own
    output stays inside the grammar (here it must open an object)."""
    from model_runtime.grammar import Grammars

    prompts = prompts_of(tiny_loaded, TEXTS[:4])
    good = [
        SamplingParams(max_new_tokens=12, temperature=0.0),
        SamplingParams(max_new_tokens=12, temperature=0.9, top_p=0.9, seed=7),
        SamplingParams(max_new_tokens=12, temperature=0.0),
    ]
    constrained = SamplingParams(max_new_tokens=12, temperature=0.0, grammar=Grammars(tiny_loaded).json_object())
    alone = run_with_errors(tiny_loaded, prompts[:3], good)
    mixed = run_with_errors(
        tiny_loaded, [prompts[0], prompts[3], prompts[1], prompts[2]], [good[0], constrained, *good[1:]]
    )
    assert [mixed[0], mixed[2], mixed[3]] == alone
    assert isinstance(mixed[1], list)
    assert tiny_loaded.tokenizer.decode(mixed[1]).lstrip().startswith("{")
