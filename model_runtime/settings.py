"""Runtime settings: from command-line flags, or from MODELSHIP_* environment variables as the operator
sets them on the pod. A flag wins over the variable; a bad value stops start-up with a message naming both."""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping, Sequence
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .contract import parse_latency_buckets


class SettingsError(ValueError):
    """A setting is missing or malformed; the message names the flag and the variable."""


class RuntimeSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    model_path: str = Field(min_length=1)
    """A Hugging Face model folder, or a .gguf file."""
    model_name: str = "model"
    """The name clients use in the `model` field; other names get 404."""
    task: Literal["text-generation", "embeddings"] = "text-generation"
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    device: Literal["auto", "cpu", "cuda"] = "auto"
    host: str = "0.0.0.0"
    port: int = Field(default=8080, ge=1, le=65535)
    max_batch_size: int = Field(default=16, ge=1, le=256)
    max_batch_wait_ms: int = Field(default=5, ge=0, le=1000)
    max_input_tokens: int = Field(default=2048, ge=1)
    max_new_tokens: int = Field(default=512, ge=1)
    max_concurrent_requests: int = Field(default=64, ge=1)
    request_timeout_seconds: float = Field(default=60, gt=0)
    truncation: Literal["error", "keep-last"] = "error"
    max_body_bytes: int = Field(default=1_048_576, ge=1024)
    shutdown_timeout_seconds: float = Field(default=25, ge=0)
    api_key: str | None = Field(default=None, repr=False)
    namespace: str = ""
    model_deployment: str = ""
    revision: str = ""
    drift_window: int = Field(default=200, ge=10)
    threads: int | None = Field(default=None, ge=1)
    kv_cache_tokens: int | None = Field(default=None, ge=1)
    """Tokens of KV cache the engine admits sequences into (each batch's worst case must fit); unset: derived
    from the memory limit (model_runtime.kvbudget)."""
    faults_enabled: bool = False
    fault_latency_seconds: float = Field(default=0.0, ge=0)
    fault_error_rate: float = Field(default=0.0, ge=0, le=1)
    fault_empty_rate: float = Field(default=0.0, ge=0, le=1)  # answers that are empty (EOS first), with 200
    fault_never_ready: bool = False
    fault_warmup_seconds: float = Field(default=0.0, ge=0, le=3600)
    """A warm-up this much longer than the real one: a model slow to become ready (rollout tests)."""
    latency_buckets: str = ""
    """Request-latency histogram bounds in seconds, comma-separated; empty: model_runtime.contract's default."""

    @field_validator("latency_buckets")
    @classmethod
    def _buckets_parse(cls, value: str) -> str:
        parse_latency_buckets(value)
        return value

    @property
    def latency_bounds(self) -> tuple[float, ...]:
        return parse_latency_buckets(self.latency_buckets)

    @model_validator(mode="after")
    def _faults_need_the_switch(self) -> RuntimeSettings:
        injected = (
            self.fault_latency_seconds
            or self.fault_error_rate
            or self.fault_empty_rate
            or self.fault_never_ready
            or self.fault_warmup_seconds
        )
        if injected and not self.faults_enabled:
            raise ValueError(
                "fault injection settings need MODELSHIP_FAULTS_ENABLED=true (--faults-enabled); "
                "they are for tests and off by default"
            )
        return self


# field -> (flag, environment variable)
def _env_name(field: str) -> str:
    return "MODELSHIP_" + field.upper()


def _flag(field: str) -> str:
    return "--" + field.replace("_", "-")


SettingsT = TypeVar("SettingsT", bound=BaseModel)


def parse(argv: Sequence[str], environ: Mapping[str, str] | None = None) -> RuntimeSettings:
    """The inference server's settings from flags over environment variables."""
    return parse_settings(RuntimeSettings, argv, environ, "python -m model_runtime serve")


def parse_settings(
    model: type[SettingsT], argv: Sequence[str], environ: Mapping[str, str] | None, prog: str
) -> SettingsT:
    """Any settings model from `--flag value` over `MODELSHIP_FLAG`; raises SettingsError naming both."""
    environ = os.environ if environ is None else environ
    parser = argparse.ArgumentParser(
        prog=prog, exit_on_error=False, description="Settings also come from MODELSHIP_* environment variables."
    )
    for name, info in model.model_fields.items():
        if info.annotation is bool:
            parser.add_argument(
                _flag(name),
                dest=name,
                action="store_const",
                const="true",
                default=None,
                help=f"(env {_env_name(name)})",
            )
        else:
            parser.add_argument(_flag(name), dest=name, default=None, help=f"(env {_env_name(name)})")
    try:
        namespace, unknown = parser.parse_known_args(list(argv))
    except argparse.ArgumentError as error:
        raise SettingsError(str(error)) from None
    if unknown:
        raise SettingsError(f"unknown arguments: {' '.join(unknown)}")
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for name in model.model_fields:
        flag_value = getattr(namespace, name)
        if flag_value is not None:
            values[name], sources[name] = flag_value, _flag(name)
        elif environ.get(_env_name(name), "") != "":
            values[name], sources[name] = environ[_env_name(name)], _env_name(name)
    try:
        return model.model_validate(values)
    except ValidationError as error:
        problems = []
        for item in error.errors(include_url=False):
            field = str(item["loc"][0]) if item["loc"] else ""
            source = sources.get(field, f"{_flag(field)} / {_env_name(field)}" if field else "settings")
            problems.append(f"{source}: {str(item['msg']).removeprefix('Value error, ')}")
        raise SettingsError("; ".join(problems)) from None
