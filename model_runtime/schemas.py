"""The OpenAI-compatible request bodies, as vLLM's OpenAI server defines them: strict types; unknown fields
are ignored (and logged at debug level by the dataplane), as vLLM does; fields that SDKs and frameworks
send at their defaults are accepted, and a value this server cannot honour yet is refused with a 400
that says so. Which problems are schema errors (422) and which are bad parameter values (400) is decided
in `classify`."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .integers import Integer
from .sampling import SEED_RANGE

MAX_STOP_SEQUENCES = 4
MAX_TOP_LOGPROBS = 20
MAX_EMBEDDING_INPUTS = 256


class Body(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True, frozen=True)


class StreamOptions(Body):
    include_usage: bool = False
    """A last chunk with empty choices and the usage of the whole request."""
    continuous_usage_stats: bool = False


class JsonSchemaFormat(Body):
    name: str = Field(default="response", max_length=64)
    description: str | None = None
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")
    """The JSON Schema the output must match; when absent, any JSON object or array (as json_object)."""
    strict: bool | None = None


class ResponseFormat(Body):
    model_config = ConfigDict(populate_by_name=True)

    type: Literal["text", "json_object", "json_schema"] = "text"
    """`json_object`: the output is one JSON object; `json_schema`: it matches `json_schema.schema`."""
    json_schema: JsonSchemaFormat | None = None

    @model_validator(mode="after")
    def _schema_for_schema_mode(self) -> ResponseFormat:
        if self.type == "json_schema" and self.json_schema is None:
            raise ValueError("response_format.json_schema is required when its type is json_schema")
        return self


MAX_STOP_TOKEN_IDS = 64
MAX_CHOICES = 16  # n, and n x prompts for a list of prompts
MAX_PROMPTS = 16
MAX_LOGIT_BIAS = 300  # entries, as OpenAI


class Sampling(Body):
    model: str = Field(min_length=1)
    max_tokens: Integer | None = Field(default=None, ge=1)
    temperature: float = Field(default=1.0, ge=0.0, le=2.0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    seed: Integer | None = Field(default=None, ge=SEED_RANGE[0], le=SEED_RANGE[1])
    stop: str | list[str] | None = None
    stream: bool = False
    n: Integer = Field(default=1, ge=1, le=MAX_CHOICES)
    user: str | None = None
    stream_options: StreamOptions | None = None
    presence_penalty: float = Field(default=0.0, ge=-2.0, le=2.0)
    frequency_penalty: float = Field(default=0.0, ge=-2.0, le=2.0)
    # At least 0.01: dividing logits by a subnormal penalty (5e-324) makes them infinite.
    repetition_penalty: float = Field(default=1.0, ge=0.01, le=10.0)
    top_k: Integer = Field(default=-1, ge=-1)
    min_p: float = Field(default=0.0, ge=0.0, le=1.0)
    min_tokens: Integer = Field(default=0, ge=0)
    stop_token_ids: list[Integer] | None = Field(default=None, max_length=MAX_STOP_TOKEN_IDS)
    logit_bias: dict[str, Annotated[float, Field(ge=-100.0, le=100.0)]] | None = Field(
        default=None, max_length=MAX_LOGIT_BIAS
    )
    response_format: ResponseFormat | None = None
    # vLLM's extension, which the router's mirror probes use: keep generating past end-of-sequence so that
    # both tracks' next-token distributions are compared at every probed position.
    ignore_eos: bool = False

    @field_validator("stop")
    @classmethod
    def _stops(cls, stop: str | list[str] | None) -> str | list[str] | None:
        stops = [stop] if isinstance(stop, str) else stop or []
        if len(stops) > MAX_STOP_SEQUENCES:
            raise ValueError(f"at most {MAX_STOP_SEQUENCES} stop sequences")
        if any(not s for s in stops):
            raise ValueError("stop sequences must not be empty")
        return stop

    def stop_sequences(self) -> tuple[str, ...]:
        return (self.stop,) if isinstance(self.stop, str) else tuple(self.stop or ())

    def bias_by_token(self, vocab_size: int) -> tuple[tuple[int, float], ...]:
        """logit_bias with its keys as token ids; ValueError naming a key that is not one."""
        out = []
        for key, bias in (self.logit_bias or {}).items():
            token = int(key) if key.isascii() and key.isdigit() and len(key) <= 10 else -1
            if not 0 <= token < vocab_size:
                raise ValueError(f"logit_bias keys must be token ids below {vocab_size}, not {key[:20]!r}")
            out.append((token, bias))
        return tuple(out)

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)


class CompletionRequest(Sampling):
    prompt: str | list[str] | list[Integer] | list[list[Integer]]
    """One prompt as text or token ids, or a list of them (each answered with n choices)."""
    logprobs: Integer | None = Field(default=None, ge=0, le=MAX_TOP_LOGPROBS)


class ContentPart(Body):
    type: Literal["text"]
    text: str


class ChatMessage(Body):
    role: Literal["system", "user", "assistant"]
    content: str | list[ContentPart]
    name: str | None = None

    def text(self) -> str:
        """The message as the chat template takes it: content parts of text joined by newlines, as vLLM."""
        if isinstance(self.content, str):
            return self.content
        return "\n".join(part.text for part in self.content)


class ChatRequest(Sampling):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: Integer | None = Field(default=None, ge=1)
    logprobs: bool = False
    top_logprobs: Integer | None = Field(default=None, ge=0, le=MAX_TOP_LOGPROBS)


class TokenizeRequest(Body):
    """vLLM's /tokenize: a completion prompt as /v1/completions tokenizes it, or chat messages as
    /v1/chat/completions renders and tokenizes them."""

    model: str | None = Field(default=None, min_length=1)
    prompt: str | None = None
    messages: list[ChatMessage] | None = Field(default=None, min_length=1)
    add_generation_prompt: bool = True
    """For messages: end with the assistant's turn, as a chat completion does."""

    @model_validator(mode="after")
    def _one_kind(self) -> TokenizeRequest:
        if (self.prompt is None) == (self.messages is None):
            raise ValueError("send exactly one of prompt or messages")
        return self


class EmbeddingRequest(Body):
    model: str = Field(min_length=1)
    input: str | list[str]
    encoding_format: Literal["float", "base64"] = "float"
    """base64: each vector as little-endian float32 bytes, base64-encoded (what the OpenAI SDK asks for by
    default, and decodes itself)."""
    user: str | None = None
    dimensions: Integer | None = Field(default=None, ge=1)

    @field_validator("input")
    @classmethod
    def _inputs(cls, value: str | list[str]) -> str | list[str]:
        items = [value] if isinstance(value, str) else value
        if not items:
            raise ValueError("input must not be empty")
        if len(items) > MAX_EMBEDDING_INPUTS:
            raise ValueError(f"at most {MAX_EMBEDDING_INPUTS} inputs per request")
        return value


# Pydantic error types that mean "a value out of range", not "the wrong shape of document".
_VALUE_ERRORS = {
    "greater_than",
    "greater_than_equal",
    "less_than",
    "less_than_equal",
    "too_short",
    "too_long",
    "string_too_short",
    "string_too_long",
    "value_error",
    "literal_error",
}


# The members of a union that pydantic names in an error's location ("prompt.list[int].0"): not fields.
_TYPE_IN_LOCATION = re.compile(r"str|int|float|bool|literal\[.*\]|list\[.*\]|function-[a-z-]+\[.*\]")


def classify(error: ValidationError) -> tuple[bool, str, str | None]:
    """(is a schema error, message, the first offending parameter)."""
    problems = error.errors(include_url=False)
    schema = any(p["type"] not in _VALUE_ERRORS for p in problems)
    chosen = next((p for p in problems if (p["type"] not in _VALUE_ERRORS) == schema), problems[0])
    param = (
        ".".join(
            str(part) for part in chosen["loc"] if not isinstance(part, str) or not _TYPE_IN_LOCATION.fullmatch(part)
        )
        or None
    )
    message = str(chosen["msg"]).removeprefix("Value error, ")
    text = f"{param}: {message}" if param else message
    if len(problems) > 1:
        text += f" (and {len(problems) - 1} more problem{'s' if len(problems) > 2 else ''})"
    return schema, text, param
