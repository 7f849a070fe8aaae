"""The OpenAI-compatible request bodies. Strict types; unknown fields are refused. Which problems are
schema errors (422) and which are bad parameter values (400) is decided in `classify`."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

MAX_STOP_SEQUENCES = 4
MAX_TOP_LOGPROBS = 20
MAX_EMBEDDING_INPUTS = 256


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class Sampling(Body):
    model: str = Field(min_length=1)
    max_tokens: int | None = Field(default=None, ge=1)
    temperature: float = Field(default=1.0, ge=0.0, le=2.0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    seed: int | None = None
    stop: str | list[str] | None = None
    stream: bool = False
    n: Literal[1] = 1
    user: str | None = None
    stream_options: dict[str, Any] | None = None
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


class CompletionRequest(Sampling):
    prompt: str
    logprobs: int | None = Field(default=None, ge=0, le=MAX_TOP_LOGPROBS)


class ChatMessage(Body):
    role: Literal["system", "user", "assistant"]
    content: str
    name: str | None = None


class ChatRequest(Sampling):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    logprobs: bool = False
    top_logprobs: int | None = Field(default=None, ge=0, le=MAX_TOP_LOGPROBS)


class EmbeddingRequest(Body):
    model: str = Field(min_length=1)
    input: str | list[str]
    encoding_format: Literal["float"] = "float"
    user: str | None = None

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


def classify(error: ValidationError) -> tuple[bool, str, str | None]:
    """(is a schema error, message, the first offending parameter)."""
    problems = error.errors(include_url=False)
    schema = any(p["type"] not in _VALUE_ERRORS for p in problems)
    chosen = next((p for p in problems if (p["type"] not in _VALUE_ERRORS) == schema), problems[0])
    param = (
        ".".join(
            str(part)
            for part in chosen["loc"]
            if not isinstance(part, str) or part not in ("str", "list[str]", "int", "float", "bool", "literal[1]")
        )
        or None
    )
    message = str(chosen["msg"]).removeprefix("Value error, ")
    text = f"{param}: {message}" if param else message
    if len(problems) > 1:
        text += f" (and {len(problems) - 1} more problem{'s' if len(problems) > 2 else ''})"
    return schema, text, param
