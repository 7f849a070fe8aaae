"""Choosing the next token from float32 logits: greedy, or temperature and nucleus (top-p) sampling with a
per-request generator, so a seed reproduces a sample whatever else shares the batch."""

from __future__ import annotations

from dataclasses import dataclass

import torch


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
        return self.temperature == 0.0


def make_generator(params: SamplingParams, device: str) -> torch.Generator | None:
    if params.greedy:
        return None
    generator = torch.Generator(device=device)
    if params.seed is not None:
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
) -> torch.Tensor:
    """One next token per row of `logits` ([batch, vocab], float32)."""
    chosen = torch.argmax(logits, dim=-1)
    for row, (param, generator) in enumerate(zip(params, generators, strict=True)):
        if param.greedy:
            continue
        probs = torch.softmax(logits[row] / param.temperature, dim=-1)
        probs = nucleus_filter(probs, param.top_p)
        chosen[row] = torch.multinomial(probs, 1, generator=generator)[0]
    return chosen


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
