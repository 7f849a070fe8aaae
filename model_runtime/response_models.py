"""The bodies the runtime answers with, as models, so /openapi.json describes them and schemathesis can
hold every 200 to them. `responses.Shaper` builds these bodies as plain dicts (no validation per token);
tests/test_responses.py and the schemathesis test check that the two agree."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class Answer(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Usage(Answer):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class CompletionLogprobs(Answer):
    tokens: list[str]
    token_logprobs: list[float | None]
    top_logprobs: list[dict[str, float] | None]
    text_offset: list[int]


class CompletionChoice(Answer):
    index: int
    text: str
    finish_reason: Literal["stop", "length"] | None
    logprobs: CompletionLogprobs | None


class Completion(Answer):
    id: str
    object: Literal["text_completion"]
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage


class CompletionChunkChoice(Answer):
    index: int
    text: str
    finish_reason: Literal["stop", "length"] | None
    logprobs: CompletionLogprobs | None


class CompletionChunk(Answer):
    """One server-sent event of a streamed completion; the last one, with `stream_options.include_usage`,
    has no choices and the usage of the whole request."""

    id: str
    object: Literal["text_completion"]
    created: int
    model: str
    choices: list[CompletionChunkChoice]
    usage: Usage | None = None


class TopLogprob(Answer):
    token: str
    logprob: float


class TokenLogprob(Answer):
    token: str
    logprob: float
    top_logprobs: list[TopLogprob]


class ChatLogprobs(Answer):
    content: list[TokenLogprob]


class AssistantMessage(Answer):
    role: Literal["assistant"]
    content: str


class ChatChoice(Answer):
    index: int
    message: AssistantMessage
    finish_reason: Literal["stop", "length"] | None
    logprobs: ChatLogprobs | None


class ChatCompletion(Answer):
    id: str
    object: Literal["chat.completion"]
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage


class Delta(Answer):
    role: Literal["assistant"] | None = None
    content: str | None = None


class ChatChunkChoice(Answer):
    index: int
    delta: Delta
    finish_reason: Literal["stop", "length"] | None
    logprobs: ChatLogprobs | None


class ChatCompletionChunk(Answer):
    """One server-sent event of a streamed chat completion."""

    id: str
    object: Literal["chat.completion.chunk"]
    created: int
    model: str
    choices: list[ChatChunkChoice]
    usage: Usage | None = None


class Embedding(Answer):
    object: Literal["embedding"]
    index: int
    embedding: list[float] | str  # str: base64 of little-endian float32, when encoding_format is base64


class EmbeddingUsage(Answer):
    prompt_tokens: int
    total_tokens: int


class Embeddings(Answer):
    object: Literal["list"]
    model: str
    data: list[Embedding]
    usage: EmbeddingUsage


class Model(Answer):
    id: str
    object: Literal["model"]
    created: int
    owned_by: str
    task: Literal["text-generation", "embeddings"]
    tokenizer_fingerprint: str | None = Field(
        default=None, description="Digest of what decides tokenization (model_runtime.fingerprint)."
    )
    config_fingerprint: str | None = Field(default=None, description="Digest of the model's config.")


class ModelList(Answer):
    object: Literal["list"]
    data: list[Model]


class Tokenized(Answer):
    """vLLM's /tokenize answer."""

    count: int = Field(ge=0)
    max_model_len: int = Field(ge=1)
    tokens: list[int]
