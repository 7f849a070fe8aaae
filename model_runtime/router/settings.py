"""Router settings, from flags or MODELSHIP_* environment variables (the operator sets them)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from model_runtime.contract import parse_latency_buckets


class RouterSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    host: str = "0.0.0.0"
    port: int = Field(default=8080, ge=1, le=65535)
    namespace: str = ""
    model_deployment: str = ""
    routing_configmap: str = ""
    """The ConfigMap (key routing.json) to watch; with routing_file unset, pods are found through the API."""
    routing_file: str = ""
    """Instead of the API: a JSON file with "routing" and "endpoints" (revision -> [host:port]), re-read on
    change. For tests and benchmarks."""
    upstream_port: int = Field(default=8080, ge=1, le=65535)
    api_key: str | None = Field(default=None, repr=False)
    max_body_bytes: int = Field(default=1_048_576, ge=1024)
    upstream_timeout_seconds: float = Field(default=300.0, gt=0)
    attempts: int = Field(default=3, ge=1, le=10)
    """Tries per request: a pod that refuses the connection or is draining gets the request sent elsewhere."""
    mirror_queue: int = Field(default=64, ge=1)
    mirror_workers: int = Field(default=2, ge=1, le=64)
    divergence_tokens: int = Field(default=4, ge=1, le=64)
    divergence_top_k: int = Field(default=10, ge=1, le=20)
    shutdown_timeout_seconds: float = Field(default=10.0, ge=0)
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
    def _one_source(self) -> RouterSettings:
        if not self.routing_file and not (self.routing_configmap and self.namespace):
            raise ValueError("set routing_configmap and namespace (in a cluster) or routing_file")
        return self
