"""OpenAI-shaped response bodies and stream chunks, from what the engine generated: pure functions of the
request, the choices and their results, with no I/O, so their shapes are tested without a model."""

from __future__ import annotations

import base64
import struct
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from .engine import Finished, TokenEvent
from .sampling import SEED_RANGE, SamplingParams
from .schemas import ChatRequest, CompletionRequest


@dataclass
class Generated:
    text: str
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int
    logprobs: list[TokenEvent]


@dataclass(frozen=True)
class Choice:
    """One answer the request asked for: prompt p's j-th sample has index p * n + j, as OpenAI numbers them."""

    index: int
    prompt_ids: list[int]
    params: SamplingParams
    first_of_prompt: bool


def choices_of(prompts: list[list[int]], params: SamplingParams, n: int) -> list[Choice]:
    """n choices per prompt. With a seed, sample j is seeded seed + j (seed - j at the top of the range), so
    the choices differ and each one is reproducible."""
    out = []
    for p, ids in enumerate(prompts):
        for j in range(n):
            seeded = params
            if params.seed is not None and j:
                seed = params.seed + j if params.seed + j <= SEED_RANGE[1] else params.seed - j
                seeded = replace(params, seed=seed)
            out.append(Choice(p * n + j, ids, seeded, j == 0))
    return out


def usage_of(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def finished_usage(choices: list[Choice], ends: dict[int, Finished]) -> dict[str, int]:
    """A request's usage: each prompt's tokens once, however many choices it had, and every choice's output."""
    prompt = sum(ends[c.index].prompt_tokens for c in choices if c.first_of_prompt and c.index in ends)
    return usage_of(prompt, sum(end.completion_tokens for end in ends.values()))


def encode_embedding(vector: list[float]) -> str:
    """OpenAI's base64 encoding of an embedding: little-endian float32 bytes."""
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode("ascii")


class Shaper:
    """Bodies for one served model; `token_text` decodes one token id (the tokenizer's view of it)."""

    def __init__(self, model_name: str, token_text: Callable[[int], str]) -> None:
        self.model_name = model_name
        self.token_text = token_text

    # ---- completions ----
    def completion_logprobs(self, tokens: list[TokenEvent]) -> dict[str, Any]:
        texts = [self.token_text(t.token_id) for t in tokens]
        offsets, position = [], 0
        for text in texts:
            offsets.append(position)
            position += len(text)
        return {
            "tokens": texts,
            "token_logprobs": [t.logprobs.logprob if t.logprobs else None for t in tokens],
            "top_logprobs": [
                {self.token_text(i): v for i, v in t.logprobs.top} if t.logprobs else None for t in tokens
            ],
            "text_offset": offsets,
        }

    def completion(self, request: CompletionRequest, choices: list[Choice], results: list[Generated]) -> dict[str, Any]:
        shaped = []
        for choice, result in zip(choices, results, strict=True):
            answer: dict[str, Any] = {
                "index": choice.index,
                "text": result.text,
                "finish_reason": result.finish_reason,
                "logprobs": None,
            }
            if request.logprobs is not None:
                answer["logprobs"] = self.completion_logprobs(result.logprobs)
            shaped.append(answer)
        return self._envelope("cmpl", "text_completion", shaped, choices, results)

    def completion_chunk(
        self, request: CompletionRequest, base: dict[str, Any], index: int, event: TokenEvent | Finished
    ) -> dict[str, Any] | None:
        """The chunk for one event of choice `index`; None for an event that carries nothing to send."""
        if isinstance(event, Finished):
            return base | {
                "choices": [{"index": index, "text": "", "finish_reason": event.finish_reason, "logprobs": None}]
            }
        if not event.text and event.token_id < 0:
            return None
        answer: dict[str, Any] = {"index": index, "text": event.text, "finish_reason": None, "logprobs": None}
        if request.logprobs is not None and event.token_id >= 0:
            answer["logprobs"] = self.completion_logprobs([event])
        return base | {"choices": [answer]}

    # ---- chat ----
    def chat_logprobs(self, tokens: list[TokenEvent]) -> dict[str, Any]:
        content = []
        for token in tokens:
            if token.logprobs is None:
                continue
            content.append(
                {
                    "token": self.token_text(token.token_id),
                    "logprob": token.logprobs.logprob,
                    "top_logprobs": [{"token": self.token_text(i), "logprob": v} for i, v in token.logprobs.top],
                }
            )
        return {"content": content}

    def chat(self, request: ChatRequest, choices: list[Choice], results: list[Generated]) -> dict[str, Any]:
        shaped = []
        for choice, result in zip(choices, results, strict=True):
            answer: dict[str, Any] = {
                "index": choice.index,
                "message": {"role": "assistant", "content": result.text},
                "finish_reason": result.finish_reason,
                "logprobs": None,
            }
            if request.logprobs:
                answer["logprobs"] = self.chat_logprobs(result.logprobs)
            shaped.append(answer)
        return self._envelope("chatcmpl", "chat.completion", shaped, choices, results)

    def chat_chunk(
        self, request: ChatRequest, base: dict[str, Any], index: int, event: TokenEvent | Finished, first: bool
    ) -> dict[str, Any] | None:
        """The chunk for one event of choice `index` (`first`: its first text, which names the role)."""
        if isinstance(event, Finished):
            return base | {
                "choices": [{"index": index, "delta": {}, "finish_reason": event.finish_reason, "logprobs": None}]
            }
        if not event.text and event.token_id < 0:
            return None
        delta: dict[str, Any] = {"content": event.text}
        if first:
            delta["role"] = "assistant"
        answer: dict[str, Any] = {"index": index, "delta": delta, "finish_reason": None, "logprobs": None}
        if request.logprobs and event.token_id >= 0:
            answer["logprobs"] = self.chat_logprobs([event])
        return base | {"choices": [answer]}

    # ---- shared ----
    def stream_base(self, prefix: str, kind: str) -> dict[str, Any]:
        """The fields every chunk of one stream repeats."""
        return {
            "id": f"{prefix}-{uuid.uuid4().hex}",
            "object": kind,
            "created": int(time.time()),
            "model": self.model_name,
        }

    def _envelope(
        self, prefix: str, kind: str, shaped: list[dict[str, Any]], choices: list[Choice], results: list[Generated]
    ) -> dict[str, Any]:
        prompt_tokens = sum(r.prompt_tokens for c, r in zip(choices, results, strict=True) if c.first_of_prompt)
        return self.stream_base(prefix, kind) | {
            "choices": shaped,
            "usage": usage_of(prompt_tokens, sum(r.completion_tokens for r in results)),
        }

    def embeddings(self, vectors: list[list[float]], prompt_tokens: int, base64_encoded: bool) -> dict[str, Any]:
        return {
            "object": "list",
            "model": self.model_name,
            "data": [
                {"object": "embedding", "index": i, "embedding": encode_embedding(v) if base64_encoded else v}
                for i, v in enumerate(vectors)
            ],
            "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens},
        }
