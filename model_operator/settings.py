"""Operator settings, read once at start-up from MODELSHIP_* environment variables (the chart sets them)."""

from __future__ import annotations

import os
from collections.abc import Mapping

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from .leadership import Timing


class OperatorSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    runtime_image: str = "modelship/runtime:0.1.0"
    """Image of the model pods and the router when a spec names none."""
    vllm_image: str = "vllm/vllm-openai:v0.11.0"
    """Image of `runtime.server: vllm` pods when a spec names none (any vLLM from 0.10.2, which stopped
    logging prompts by default)."""
    llamacpp_image: str = "ghcr.io/ggml-org/llama.cpp:server"
    """Image of `runtime.server: llamacpp` pods when a spec names none."""
    router_image: str | None = None
    """Image of the router pods; the runtime image when unset. Not taken from a spec, so a spec's image
    change restarts model pods of the new revision only, never the router."""
    prometheus_url: str = "http://prometheus-server.monitoring.svc:80"
    """Prometheus to query when a spec names none."""
    prometheus_timeout_seconds: float = Field(default=5.0, gt=0)
    analysis_batch_seconds: float = Field(default=1.0, ge=0, le=10)
    """Analyses falling due within the same slot of this length go to Prometheus as one query per SLI, so
    Prometheus sees at most one batch per slot however large the fleet; a look waits at most this long.
    0 sends each look at once."""
    scale_down_delay_seconds: float = Field(default=30.0, ge=0)
    """How long a replaced stable revision keeps running after promotion, so in-flight requests and
    clients that still route to it finish before its pods go."""
    resync_seconds: float = Field(default=30.0, gt=0)
    """Longest time between two reconciles of a resource when nothing happens."""
    pod_check_seconds: float = Field(default=10.0, gt=0, le=300)
    """How long a revision is short of ready pods before its pods are listed to learn why (a crash loop,
    an OOM kill, an image that cannot be pulled), and how often while it stays short. Not at once: a
    rollout's new revision is short of ready on every event of its start, and at fleet size listing its
    pods on each of them was most of the operator's API time."""
    metrics_port: int = Field(default=8000, ge=0, le=65535)
    """Port of the operator's /metrics (0 turns it off)."""
    metrics_host: str = "0.0.0.0"
    """Address the operator's /metrics listens on."""
    runtime_user: int = Field(default=1000, ge=1)
    """Non-root user the model and router containers run as."""
    api_workers: int = Field(default=32, ge=1, le=512)
    """Threads for the reconcile loops' blocking calls (Kubernetes API and Prometheus). The calls wait on
    the network, so many more than cores: with asyncio's default (cores + 4) a fleet's reconciles queue."""
    leader_election: bool = True
    """Act only while holding the Lease, so several replicas can run (one leads, the others stand by)."""
    lease_name: str = Field(default="modelship-operator", min_length=1)
    lease_namespace: str = Field(default="default", min_length=1)
    """Namespace of the Lease; the chart sets the release's."""
    lease_duration_seconds: float = 15.0
    """How long a standby waits, after the Lease last changed, before taking it over."""
    renew_deadline_seconds: float = 10.0
    """How long a leader keeps acting without a renewal; shorter than the lease duration."""
    retry_period_seconds: float = 2.0
    """How often replicas try to take or renew the Lease."""

    def server_image(self, server: str) -> str:
        """The image a spec's server runs when the spec names none (a `custom` server always names one)."""
        return {"vllm": self.vllm_image, "llamacpp": self.llamacpp_image}.get(server, self.runtime_image)

    @model_validator(mode="after")
    def _timing_is_safe(self) -> OperatorSettings:
        self.lease_timing()
        return self

    def lease_timing(self) -> Timing:
        return Timing(self.lease_duration_seconds, self.renew_deadline_seconds, self.retry_period_seconds)


def load_settings(environ: Mapping[str, str] | None = None) -> OperatorSettings:
    environ = os.environ if environ is None else environ
    values = {
        name: environ[f"MODELSHIP_{name.upper()}"]
        for name in OperatorSettings.model_fields
        if environ.get(f"MODELSHIP_{name.upper()}", "") != ""
    }
    try:
        return OperatorSettings.model_validate(values)
    except ValidationError as error:
        problems = [
            f"MODELSHIP_{str(e['loc'][0]).upper()}: {e['msg']}" if e["loc"] else e["msg"]
            for e in error.errors(include_url=False)
        ]
        raise ValueError("; ".join(problems)) from None
