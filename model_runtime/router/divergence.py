"""How differently two revisions answer the same prompt: the Jensen-Shannon divergence (base 2, 0..1) of
their next-token distributions, position by position over the first tokens, averaged.

Each side reports its top-k tokens with their log-probabilities under the full vocabulary; the mass
outside the top-k goes to one "other" bucket, so two distributions are compared over the union of their
tops plus that bucket. Tokens are compared by their text, so a canary with a different tokenizer (whose
tokens read differently) shows up as divergent, as it should.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

TopTokens = Mapping[str, float]  # token text -> logprob


def _distribution(top: TopTokens, support: Sequence[str]) -> list[float]:
    probs = {token: math.exp(logprob) for token, logprob in top.items() if math.isfinite(logprob)}
    known = [probs.get(token, 0.0) for token in support]
    other = max(0.0, 1.0 - sum(probs.values()))
    return [*known, other]


def js_divergence(p: Sequence[float], q: Sequence[float]) -> float:
    def kl(a: Sequence[float], m: Sequence[float]) -> float:
        return sum(x * math.log2(x / y) for x, y in zip(a, m, strict=True) if x > 0 and y > 0)

    m = [(x + y) / 2 for x, y in zip(p, q, strict=True)]
    return max(0.0, min(1.0, (kl(p, m) + kl(q, m)) / 2))


def position_divergence(a: TopTokens, b: TopTokens) -> float:
    support = sorted(set(a) | set(b))
    return js_divergence(_distribution(a, support), _distribution(b, support))


def mean_divergence(a: Sequence[TopTokens], b: Sequence[TopTokens]) -> float | None:
    """Mean over the positions both answers report alternatives for; None when there is nothing to compare."""
    pairs = [(x, y) for x, y in zip(a, b, strict=False) if x and y]
    if not pairs:
        return None
    return sum(position_divergence(x, y) for x, y in pairs) / len(pairs)


def top_tokens(response: Mapping[str, Any]) -> list[dict[str, float]]:
    """The per-position top logprobs of a /v1/completions or /v1/chat/completions answer."""
    try:
        logprobs = response["choices"][0]["logprobs"]
    except (KeyError, IndexError, TypeError):
        return []
    if not isinstance(logprobs, Mapping):
        return []
    if "top_logprobs" in logprobs:  # completions
        return [dict(position) for position in logprobs["top_logprobs"] if isinstance(position, Mapping)]
    positions = []
    for entry in logprobs.get("content") or []:  # chat
        positions.append({alt["token"]: float(alt["logprob"]) for alt in entry.get("top_logprobs", [])})
    return positions
