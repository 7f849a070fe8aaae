"""Choosing the next token from float32 logits: greedy, or temperature and nucleus (top-p) sampling with a
per-request generator, so a seed reproduces a sample whatever else shares the batch."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

# Below this a temperature is greedy (vLLM's _SAMPLING_EPS): dividing logits by it would overflow to inf
# and make the softmax NaN.
GREEDY_BELOW = 1e-5


@dataclass(frozen=True)
class SamplingParams:
    max_new_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int | None = None
    stop: tuple[str, ...] = ()
    top_logprobs: int | None = None  # alternatives reported per token; None reports no logprobs at all
    ignore_eos: bool = False

    @property
    def greedy(self) -> bool:
        return self.temperature < GREEDY_BELOW


SEED_RANGE = (-(2**63), 2**64 - 1)  # what torch.Generator.manual_seed accepts


def make_generator(params: SamplingParams, device: str) -> torch.Generator | None:
    """The sequence's own generator; ValueError for a seed torch cannot take."""
    if params.greedy:
        return None
    generator = torch.Generator(device=device)
    if params.seed is not None:
        if not SEED_RANGE[0] <= params.seed <= SEED_RANGE[1]:
            raise ValueError(f"seed must be between {SEED_RANGE[0]} and {SEED_RANGE[1]}")
        generator.manual_seed(params.seed)
    else:
        generator.seed()
    return generator


def nucleus_filter(probs: torch.Tensor, top_p: float) -> torch.Tensor:
    """Zero the tail outside the smallest set of tokens whose probability reaches `top_p`, renormalised."""
    if top_p >= 1.0:
        return probs
    sorted_probs, order = torch.sort(probs, descending=True)
    cumulative = torch.cumsum(sorted_probs, dim=-1)
    # Keep a token if the mass before it is still under top_p; the first token is always kept.
    keep_sorted = (cumulative - sorted_probs) < top_p
    keep = torch.zeros_like(keep_sorted).scatter(-1, order, keep_sorted)
    filtered = torch.where(keep, probs, torch.zeros_like(probs))
    return filtered / filtered.sum(dim=-1, keepdim=True)


def choose(
    logits: torch.Tensor, params: list[SamplingParams], generators: list[torch.Generator | None]
) -> tuple[torch.Tensor, dict[int, str]]:
    """One next token per row of `logits` ([batch, vocab], float32), and the rows that could not be
    sampled (row -> why): a row whose logits or probabilities are not finite fails alone, so one sequence
    never spoils the others in its batch. A failed row's token is 0 and must be dropped."""
    chosen = torch.argmax(logits, dim=-1)
    failed: dict[int, str] = {}
    finite = torch.isfinite(logits).all(dim=-1).tolist()
    for row, (param, generator) in enumerate(zip(params, generators, strict=True)):
        if not finite[row]:
            failed[row] = "the model produced non-finite logits"
            chosen[row] = 0
            continue
        if param.greedy:
            continue
        if not (math.isfinite(param.temperature) and math.isfinite(param.top_p)):
            failed[row], chosen[row] = "temperature and top_p must be finite", 0
            continue
        probs = nucleus_filter(torch.softmax(logits[row] / param.temperature, dim=-1), param.top_p)
        if not bool(torch.isfinite(probs).all()) or float(probs.sum()) <= 0.0:
            failed[row], chosen[row] = "sampling produced no valid distribution", 0
            continue
        chosen[row] = torch.multinomial(probs, 1, generator=generator)[0]
    return chosen, failed


@dataclass(frozen=True)
class TokenLogprobs:
    logprob: float
    top: tuple[tuple[int, float], ...]  # (token id, logprob), most likely first


def logprobs_of(logits: torch.Tensor, chosen: torch.Tensor, k: list[int | None]) -> list[TokenLogprobs | None]:
    """Log-probabilities of the chosen tokens under the model's own distribution (temperature 1), with the
    top-k alternatives per row; None for rows that asked for no logprobs."""
    if all(count is None for count in k):
        return [None] * len(k)
    logp = torch.log_softmax(logits.to(torch.float32), dim=-1)
    widest = max(count or 0 for count in k)
    values, indices = torch.topk(logp, widest, dim=-1)
    chosen_logp = logp.gather(-1, chosen.unsqueeze(-1)).squeeze(-1)
    result: list[TokenLogprobs | None] = []
    for row, count in enumerate(k):
        if count is None:
            result.append(None)
            continue
        top = tuple((int(i), float(v)) for i, v in zip(indices[row, :count], values[row, :count], strict=True))
        result.append(TokenLogprobs(float(chosen_logp[row]), top))
    return result
