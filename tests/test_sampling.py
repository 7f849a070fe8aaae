"""The sampler's logit shaping and filters against hand-computed values (vLLM's definitions)."""

from __future__ import annotations

import math

import pytest
import torch

from model_runtime.sampling import History, SamplingParams, min_p_filter, shape_logits, top_k_filter

LOGITS = [2.0, -1.0, 0.5, 0.0, 3.0]
END = frozenset({4})


def params(**fields: object) -> SamplingParams:
    return SamplingParams(max_new_tokens=8, **fields)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("fields", "prompt", "output", "expected"),
    [
        ({}, [0], [0], LOGITS),
        # Repetition: a seen token's positive logit is divided, a negative one multiplied (prompt and output).
        ({"repetition_penalty": 2.0}, [0, 1], [2], [1.0, -2.0, 0.25, 0.0, 3.0]),
        # Frequency: minus the penalty per occurrence in the output (never the prompt); presence once.
        ({"frequency_penalty": 0.5}, [3], [0, 0, 2], [1.0, -1.0, 0.0, 0.0, 3.0]),
        ({"presence_penalty": 0.5}, [3], [0, 0, 2], [1.5, -1.0, 0.0, 0.0, 3.0]),
        ({"frequency_penalty": 0.5, "presence_penalty": 1.0}, [], [1], [2.0, -2.5, 0.5, 0.0, 3.0]),
        ({"logit_bias": ((1, 10.0), (4, -100.0))}, [], [], [2.0, 9.0, 0.5, 0.0, -97.0]),
        # End tokens (the model's and stop_token_ids) are banned until min_tokens are out.
        ({"min_tokens": 2, "stop_token_ids": (3,)}, [], [0], [2.0, -1.0, 0.5, -math.inf, -math.inf]),
        ({"min_tokens": 2, "stop_token_ids": (3,)}, [], [0, 1], LOGITS),
    ],
)
def test_shape_logits(fields: dict[str, object], prompt: list[int], output: list[int], expected: list[float]) -> None:
    logits = torch.tensor(LOGITS)
    shaped = shape_logits(logits, params(**fields), History(prompt, output, END))
    assert shaped.tolist() == pytest.approx(expected)
    assert logits.tolist() == LOGITS  # the model's logits are not changed in place


@pytest.mark.parametrize(
    ("k", "expected"),
    [(-1, [0.1, 0.2, 0.3, 0.4]), (0, [0.1, 0.2, 0.3, 0.4]), (1, [0, 0, 0, 1.0]), (2, [0, 0, 3 / 7, 4 / 7])],
)
def test_top_k_filter(k: int, expected: list[float]) -> None:
    assert top_k_filter(torch.tensor([0.1, 0.2, 0.3, 0.4]), k).tolist() == pytest.approx(expected)


@pytest.mark.parametrize(
    ("min_p", "expected"),
    [(0.0, [0.1, 0.2, 0.3, 0.4]), (0.5, [0, 0.2 / 0.9, 0.3 / 0.9, 0.4 / 0.9]), (1.0, [0, 0, 0, 1.0])],
)
def test_min_p_filter(min_p: float, expected: list[float]) -> None:
    assert min_p_filter(torch.tensor([0.1, 0.2, 0.3, 0.4]), min_p).tolist() == pytest.approx(expected)
