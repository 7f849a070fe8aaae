"""Response shaping without a model: choice numbering and seeds, usage, stream chunks."""

from __future__ import annotations

import pytest

from model_runtime.engine import Finished, TokenEvent
from model_runtime.responses import Generated, Shaper, choices_of, finished_usage, usage_of
from model_runtime.sampling import SEED_RANGE, SamplingParams, TokenLogprobs
from model_runtime.schemas import ChatRequest, CompletionRequest


@pytest.mark.parametrize(
    ("prompts", "n", "seed", "indices", "seeds"),
    [
        ([[1]], 1, None, [0], [None]),
        ([[1], [2]], 2, None, [0, 1, 2, 3], [None] * 4),
        ([[1]], 3, 10, [0, 1, 2], [10, 11, 12]),
        ([[1]], 2, SEED_RANGE[1], [0, 1], [SEED_RANGE[1], SEED_RANGE[1] - 1]),  # no seed past the range
    ],
)
def test_choices_are_numbered_prompt_major_with_a_seed_each(
    prompts: list[list[int]], n: int, seed: int | None, indices: list[int], seeds: list[int | None]
) -> None:
    choices = choices_of(prompts, SamplingParams(max_new_tokens=4, temperature=1.0, seed=seed), n)
    assert [c.index for c in choices] == indices
    assert [c.params.seed for c in choices] == seeds
    assert [c.prompt_ids for c in choices] == [p for p in prompts for _ in range(n)]
    assert [c.first_of_prompt for c in choices] == [j == 0 for _ in prompts for j in range(n)]


def test_usage_counts_each_prompt_once_and_every_choice() -> None:
    choices = choices_of([[1, 2, 3], [4]], SamplingParams(max_new_tokens=4), 2)
    ends = {c.index: Finished("stop", len(c.prompt_ids), 2 + c.index) for c in choices}
    assert finished_usage(choices, ends) == {"prompt_tokens": 4, "completion_tokens": 14, "total_tokens": 18}


def test_stream_chunks() -> None:
    shaper = Shaper("m", lambda token: f"<{token}>")
    completion = CompletionRequest.model_validate({"model": "m", "prompt": "x", "logprobs": 0})
    base = shaper.stream_base("cmpl", "text_completion")
    assert shaper.completion_chunk(completion, base, 1, TokenEvent(-1, "", None)) is None  # nothing to send
    end = shaper.completion_chunk(completion, base, 3, Finished("length", 1, 1))
    assert end is not None
    assert end["choices"] == [{"index": 3, "text": "", "finish_reason": "length", "logprobs": None}]
    chat = ChatRequest.model_validate({"model": "m", "messages": [{"role": "user", "content": "x"}]})
    base = shaper.stream_base("chatcmpl", "chat.completion.chunk")
    first = shaper.chat_chunk(chat, base, 0, TokenEvent(5, "hi", None), first=True)
    later = shaper.chat_chunk(chat, base, 0, TokenEvent(6, "!", None), first=False)
    assert first is not None
    assert later is not None
    assert first["choices"][0]["delta"] == {"content": "hi", "role": "assistant"}
    assert later["choices"][0]["delta"] == {"content": "!"}
    assert first["id"] == later["id"]


def _generated(text: str, logprobs: bool) -> Generated:
    top = TokenLogprobs(-0.5, ((5, -0.5), (6, -1.5))) if logprobs else None
    return Generated(
        text=text, finish_reason="stop", prompt_tokens=2, completion_tokens=1, logprobs=[TokenEvent(5, text, top)]
    )


@pytest.mark.parametrize("logprobs", [False, True])
def test_bodies_are_what_the_openapi_document_says(logprobs: bool) -> None:
    """The shaper's dicts validate against the response models /openapi.json is generated from."""
    from model_runtime import response_models as answers

    shaper = Shaper("m", lambda token: f"<{token}>")
    choices = choices_of([[1, 2]], SamplingParams(max_new_tokens=4), 2)
    results = [_generated("a", logprobs), _generated("b", logprobs)]
    completion = CompletionRequest.model_validate({"model": "m", "prompt": "x", "logprobs": 1 if logprobs else None})
    answers.Completion.model_validate(shaper.completion(completion, choices, results))
    chat = ChatRequest.model_validate(
        {"model": "m", "messages": [{"role": "user", "content": "x"}], "logprobs": logprobs, "top_logprobs": 1}
    )
    answers.ChatCompletion.model_validate(shaper.chat(chat, choices, results))
    for base64_encoded in (False, True):
        answers.Embeddings.model_validate(shaper.embeddings([[0.5, -1.0]], 3, base64_encoded))
    token = results[0].logprobs[0]
    base = shaper.stream_base("cmpl", "text_completion")
    for event in (token, Finished("stop", 2, 1)):
        answers.CompletionChunk.model_validate(shaper.completion_chunk(completion, base, 0, event))
    answers.CompletionChunk.model_validate(base | {"choices": [], "usage": usage_of(2, 1)})
    base = shaper.stream_base("chatcmpl", "chat.completion.chunk")
    for event, first in ((token, True), (token, False), (Finished("length", 2, 1), False)):
        answers.ChatCompletionChunk.model_validate(shaper.chat_chunk(chat, base, 0, event, first=first))
