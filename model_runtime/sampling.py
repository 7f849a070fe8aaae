"""Choosing the next token from float32 logits, as vLLM's sampler does: the logits shaped per sequence
(logit_bias; repetition, frequency and presence penalties; end tokens banned until min_tokens), then
greedy, or temperature with top-k, top-p (nucleus) and min-p filtering, drawn from a per-request
generator so a seed reproduces a sample whatever else shares the batch."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
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
    top_k: int = -1  # 0 or -1: every token
    min_p: float = 0.0
    repetition_penalty: float = 1.0  # over prompt and output tokens: >1 discourages repeats
    frequency_penalty: float = 0.0  # over output tokens, per occurrence
    presence_penalty: float = 0.0  # over output tokens, once
    logit_bias: tuple[tuple[int, float], ...] = ()  # (token id, added to its logit)
    min_tokens: int = 0  # end tokens are banned until this many are generated
    stop_token_ids: tuple[int, ...] = ()  # tokens that end the sequence like end-of-sequence
    grammar: object | None = None  # JSON mode: a compiled grammar (model_runtime.grammar) the output obeys

    @property
    def greedy(self) -> bool:
        return self.temperature < GREEDY_BELOW

    @property
    def shapes_logits(self) -> bool:
        return bool(
            self.repetition_penalty != 1.0
            or self.frequency_penalty
            or self.presence_penalty
            or self.logit_bias
            or self.min_tokens
        )


@dataclass(frozen=True)
class History:
    """What a sequence has seen, for the penalties: its prompt and what it generated so far."""

    prompt_ids: list[int]
    output_ids: list[int]
    end_ids: frozenset[int]  # the model's end-of-sequence tokens


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
    keep_sorted[..., 0] = True  # also when top_p underflows to 0 in float32 (5e-324)
    keep = torch.zeros_like(keep_sorted).scatter(-1, order, keep_sorted)
    filtered = torch.where(keep, probs, torch.zeros_like(probs))
    return filtered / filtered.sum(dim=-1, keepdim=True)


def shape_logits(logits: torch.Tensor, params: SamplingParams, history: History) -> torch.Tensor:
    """One row's logits after logit_bias, the penalties (vLLM's definitions: repetition divides a positive
    logit and multiplies a negative one of every token seen in the prompt or output; frequency subtracts
    per occurrence in the output, presence once) and the ban on end tokens before min_tokens."""
    if not params.shapes_logits:
        return logits
    shaped = logits.clone()
    if params.repetition_penalty != 1.0:
        seen = torch.tensor(sorted(set(history.prompt_ids) | set(history.output_ids)), dtype=torch.long)
        if len(seen):
            values = shaped[seen]
            shaped[seen] = torch.where(
                values > 0, values / params.repetition_penalty, values * params.repetition_penalty
            )
    if history.output_ids and (params.frequency_penalty or params.presence_penalty):
        ids, counts = torch.unique(torch.tensor(history.output_ids, dtype=torch.long), return_counts=True)
        shaped[ids] -= params.frequency_penalty * counts.to(shaped.dtype) + params.presence_penalty
    for token, bias in params.logit_bias:
        shaped[token] += bias
    if len(history.output_ids) < params.min_tokens:
        banned = sorted(history.end_ids | set(params.stop_token_ids))
        if banned:
            shaped[torch.tensor(banned, dtype=torch.long)] = -math.inf
    return shaped


def top_k_filter(probs: torch.Tensor, top_k: int) -> torch.Tensor:
    """Keep the `top_k` most likely tokens (ties at the k-th are kept), renormalised; k <= 0 keeps all."""
    if top_k <= 0 or top_k >= probs.shape[-1]:
        return probs
    kth = torch.topk(probs, top_k).values[-1]
    filtered = torch.where(probs >= kth, probs, torch.zeros_like(probs))
    return filtered / filtered.sum()


def min_p_filter(probs: torch.Tensor, min_p: float) -> torch.Tensor:
    """Keep tokens at least `min_p` times as likely as the most likely one, renormalised."""
    if min_p <= 0.0:
        return probs
    filtered = torch.where(probs >= min_p * probs.max(), probs, torch.zeros_like(probs))
    return filtered / filtered.sum()


Mask = Callable[[torch.Tensor], None]  # sets the logits of disallowed tokens to -inf, in place


def choose(
    logits: torch.Tensor,
    params: list[SamplingParams],
    generators: list[torch.Generator | None],
    histories: Sequence[History | None] | None = None,
    masks: Sequence[Mask | None] | None = None,
) -> tuple[torch.Tensor, dict[int, str]]:
    """One next token per row of `logits` ([batch, vocab], float32), and the rows that could not be
    sampled (row -> why): a row whose logits or probabilities are not finite fails alone, so one sequence
    never spoils the others in its batch. A failed row's token is 0 and must be dropped. `masks` (JSON
    mode) restrict a row to the tokens its grammar allows."""
    chosen = torch.argmax(logits, dim=-1)
    failed: dict[int, str] = {}
    finite = torch.isfinite(logits).all(dim=-1).tolist()
    for row, (param, generator) in enumerate(zip(params, generators, strict=True)):
        if not finite[row]:
            failed[row] = "the model produced non-finite logits"
            chosen[row] = 0
            continue
        row_logits = logits[row]
        history = histories[row] if histories is not None else None
        if history is not None:
            row_logits = shape_logits(row_logits, param, history)
        mask = masks[row] if masks is not None else None
        if mask is not None:
            row_logits = row_logits.clone()
            mask(row_logits)
            if not bool(torch.isfinite(row_logits).any()):
                failed[row], chosen[row] = "the grammar allows no next token", 0
                continue
        if param.greedy:
            if history is not None or mask is not None:  # the batch's argmax no longer holds for this row
                chosen[row] = torch.argmax(row_logits)
            continue
        if not (math.isfinite(param.temperature) and math.isfinite(param.top_p)):
            failed[row], chosen[row] = "temperature and top_p must be finite", 0
            continue
        probs = torch.softmax(row_logits / param.temperature, dim=-1)
        probs = min_p_filter(nucleus_filter(top_k_filter(probs, param.top_k), param.top_p), param.min_p)
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
