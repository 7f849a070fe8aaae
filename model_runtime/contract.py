"""What the operator and the runtime (model server and router) both know, defined once and imported by
both: the labels and annotations of the pods, the routing config the operator writes and the router
reads, the header that marks mirror probes, and the names, labels and buckets of the metrics the
analysis queries. Light on purpose: the operator imports it without torch."""

from __future__ import annotations

import math
import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

# ---- pods ------------------------------------------------------------------------------------------
LABEL_MODEL_DEPLOYMENT = "modelship.io/model-deployment"
LABEL_REVISION = "modelship.io/revision"
LABEL_COMPONENT = "app.kubernetes.io/component"
COMPONENT_MODEL = "model"
COMPONENT_ROUTER = "router"
RUNTIME_PORT = 8080
# The name of the model and router containers' port and of their Services' port: the router reads the
# port number of an endpoint from its EndpointSlice by this name.
SERVICE_PORT_NAME = "http"
ROUTING_KEY = "routing.json"  # the key of the routing ConfigMap NAME-routing


def scrape_annotations(port: int = RUNTIME_PORT) -> dict[str, str]:
    """How Prometheus' kubernetes_sd (and the chart's PodMonitor) find the pods' metrics."""
    return {"prometheus.io/scrape": "true", "prometheus.io/port": str(port), "prometheus.io/path": "/metrics"}


def _meta_label(pod_label: str) -> str:
    return "__meta_kubernetes_pod_label_" + re.sub(r"[^a-zA-Z0-9_]", "_", pod_label)


def identity_relabelings() -> list[dict[str, Any]]:
    """Prometheus relabel rules (kubernetes_sd, role pod) that give a model pod's series its identity
    labels from the pod's own labels. ModelShip's runtime and router label their series themselves (kept
    with honor_labels); a server that does not (vLLM) gets them here, so the analysis selects every
    server's series the same way. Rules that do not match (pods without the labels) change nothing."""
    revision = _meta_label(LABEL_REVISION)
    return [
        {
            "source_labels": [revision, "__meta_kubernetes_namespace"],
            "regex": "(.+);(.+)",
            "replacement": "$2",
            "target_label": IDENTITY_LABELS[0],
        },
        {"source_labels": [_meta_label(LABEL_MODEL_DEPLOYMENT)], "regex": "(.+)", "target_label": IDENTITY_LABELS[1]},
        {"source_labels": [revision], "regex": "(.+)", "target_label": IDENTITY_LABELS[2]},
    ]


def model_pods_label_selector(model_deployment: str) -> str:
    return f"{LABEL_MODEL_DEPLOYMENT}={model_deployment},{LABEL_COMPONENT}={COMPONENT_MODEL}"


# ---- requests --------------------------------------------------------------------------------------
MIRROR_HEADER = "x-modelship-mirror"  # set by the router on mirror probes; stripped from clients' requests
VALIDATION_HEADER = "x-modelship-validation"  # set by the operator on golden prompts; stripped like the mirror's
REVISION_HEADER = "x-modelship-revision"
CLIENT_CLOSED_REQUEST = 499  # nginx's code for a client that hung up before the answer: not a server error

# ---- metrics ---------------------------------------------------------------------------------------
REQUESTS_TOTAL = "modelship_requests_total"
REQUEST_DURATION = "modelship_request_duration_seconds"
TIME_TO_FIRST_TOKEN = "modelship_time_to_first_token_seconds"
MODEL_READY = "modelship_model_ready"
OUTPUT_DIVERGENCE = "modelship_output_divergence"
IDENTITY_LABELS = ("namespace", "model_deployment", "revision")
ENDPOINT_LABEL = "endpoint"
CODE_LABEL = "code"
SOURCE_LABEL = "source"  # who sent the request: user traffic, or the router's mirror probes
SOURCE_USER = "user"
SOURCE_MIRROR = "mirror"
SOURCE_VALIDATION = "validation"  # the operator's golden prompts, before the canary gets traffic
ANSWERED_ENDPOINTS = ("completions", "chat_completions", "embeddings")
# The `endpoint` label of a request path, in the runtime's metrics and the router's alike, so the analysis
# selects the same requests from either.
ENDPOINT_OF_PATH = {
    "/v1/completions": "completions",
    "/v1/chat/completions": "chat_completions",
    "/v1/embeddings": "embeddings",
    "/v1/models": "models",
    "/tokenize": "tokenize",
}
OTHER_ENDPOINT = "other"
# Every generated choice, by what its content is: fast, error-free answers can still be wrong, and these
# are the kinds a runtime can see without knowing the right answer (analysis: the content SLI).
CHOICES_TOTAL = "modelship_choices_total"
OUTCOME_LABEL = "outcome"
# Every choice counts once as "all", and once more for each kind of issue it has: the kinds are
# independent (a cut answer may also be garbled), so each kind's share is its count over "all", whatever
# the other kinds do. One outcome per choice, the first that applied, hid a kind behind another: a
# canary whose cut answers became readable read as "more truncated".
OUTCOME_ALL = "all"
OUTCOME_EMPTY = "empty"  # nothing but whitespace
OUTCOME_UNDECODABLE = "undecodable"  # bytes the tokenizer cannot turn into text (U+FFFD in the answer)
OUTCOME_INVALID_JSON = "invalid_json"  # JSON was asked for (response_format) and the answer does not parse
OUTCOME_TRUNCATED = "truncated"  # cut by max_tokens (finish_reason "length")
CONTENT_ISSUES = (OUTCOME_EMPTY, OUTCOME_UNDECODABLE, OUTCOME_INVALID_JSON, OUTCOME_TRUNCATED)
GENERATION_ENDPOINTS = ("completions", "chat_completions")
BUILD_INFO = "modelship_build_info"
# The router's own view of each revision, whatever server runs it: what the analysis reads for a revision
# served by vLLM, llama.cpp or any other server (labels: the identity, track, endpoint, code).
ROUTER_REQUESTS_TOTAL = "modelship_router_requests_total"
ROUTER_REQUEST_DURATION = "modelship_router_request_duration_seconds"
ROUTER_WEIGHT = "modelship_router_weight"
# The share of the KV-cache budget the running batch holds, with the meaning of vLLM's
# vllm:kv_cache_usage_perc (0..1): what an endpoint picker reads to place requests.
KV_CACHE_USAGE = "modelship_kv_cache_usage_ratio"
REQUESTS_WAITING = "modelship_requests_waiting"  # queued for the engine, not yet in its batch
SEQUENCES_RUNNING = "modelship_sequences_running"  # in the engine's running batch (a request with n > 1, n)
# What the Gateway API Inference Extension's endpoint picker reads from a model server (its model-server
# protocol, with the meaning of vllm:num_requests_waiting, vllm:num_requests_running and
# vllm:kv_cache_usage_perc): the metric names a picker in front of ModelShip's runtime is configured with.
POOL_METRICS = {
    "TotalQueuedRequests": REQUESTS_WAITING,
    "TotalRunningRequests": SEQUENCES_RUNNING,
    "KVCacheUtilization": KV_CACHE_USAGE,
}
KV_CACHE_CAPACITY = "modelship_kv_cache_capacity_tokens"
TOKENIZER_LABEL = "tokenizer_fingerprint"  # model_runtime.fingerprint: same value, same tokenization
CONFIG_LABEL = "config_fingerprint"

# Request latency: ten bounds a decade (no step wider than 1.33x) from 100 ms to 60 s, where LLM requests
# fall, so "slower than X" is counted at a bound near X for both tracks alike. Override with the runtime's
# and the router's setting MODELSHIP_LATENCY_BUCKETS (comma-separated seconds); keep both the same.
DEFAULT_LATENCY_BUCKETS: tuple[float, ...] = (
    0.005, 0.01, 0.025, 0.05, 0.075,
    0.1, 0.125, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.6, 0.75,
    1.0, 1.25, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0, 7.5,
    10.0, 12.5, 15.0, 20.0, 25.0, 30.0, 40.0, 50.0, 60.0,
)  # fmt: skip
# Output divergence (0..1): every 0.01 from 0.02 to 0.3, where drift thresholds sit, so the drift test,
# which must take each comparison at its bucket's lower bound, loses at most 0.01 of it.
DIVERGENCE_BUCKETS: tuple[float, ...] = (
    0.001, 0.0025, 0.005, 0.01,
    *(round(0.01 * i, 2) for i in range(2, 31)),
    0.35, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0,
)  # fmt: skip


def parse_latency_buckets(raw: str) -> tuple[float, ...]:
    """The request-latency bounds from a setting (comma-separated, rising, positive); empty: the default."""
    if not raw.strip():
        return DEFAULT_LATENCY_BUCKETS
    try:
        bounds = tuple(float(part) for part in raw.split(","))
    except ValueError:
        raise ValueError(f"MODELSHIP_LATENCY_BUCKETS must be comma-separated seconds, got {raw!r}") from None
    if any(b <= 0 or not math.isfinite(b) for b in bounds) or list(bounds) != sorted(set(bounds)):
        raise ValueError(f"MODELSHIP_LATENCY_BUCKETS must be positive, finite and rising, got {raw!r}")
    return bounds


# ---- the routing config ----------------------------------------------------------------------------
class Track(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    name: Literal["stable", "canary"]
    revision: str = Field(min_length=1, max_length=63)
    weight: int = Field(ge=0, le=100)


class RoutingConfig(BaseModel):
    """The document in the routing ConfigMap: tracks with revisions and weights, and mirroring."""

    model_config = ConfigDict(extra="ignore", frozen=True, populate_by_name=True)

    version: Literal[1] = 1
    tracks: tuple[Track, ...] = Field(min_length=1, max_length=2)
    mirror_percent: float = Field(default=0.0, ge=0, le=100, alias="mirrorPercent")
    sticky_header: str | None = Field(default=None, alias="stickyHeader")
    task: Literal["text-generation", "embeddings"] = "text-generation"

    @model_validator(mode="after")
    def _consistent(self) -> RoutingConfig:
        names = [t.name for t in self.tracks]
        if len(set(names)) != len(names):
            raise ValueError("each track may appear once")
        if "stable" not in names:
            raise ValueError("a stable track is required")
        if sum(t.weight for t in self.tracks) != 100:
            raise ValueError(f"track weights must add up to 100, got {sum(t.weight for t in self.tracks)}")
        return self

    def track(self, name: str) -> Track | None:
        return next((t for t in self.tracks if t.name == name), None)

    @property
    def canary_weight(self) -> int:
        canary = self.track("canary")
        return canary.weight if canary else 0

    @classmethod
    def for_rollout(
        cls,
        stable: str,
        canary: str | None,
        weight: int,
        mirror_percent: float,
        sticky_header: str | None,
        task: Literal["text-generation", "embeddings"],
    ) -> RoutingConfig:
        tracks = [Track(name="stable", revision=stable, weight=100 - (weight if canary else 0))]
        if canary:
            tracks.append(Track(name="canary", revision=canary, weight=weight))
        return cls(
            tracks=tuple(tracks),
            mirror_percent=mirror_percent if canary else 0,
            sticky_header=sticky_header,
            task=task,
        )

    def document(self) -> dict[str, object]:
        """The JSON the operator writes under ROUTING_KEY."""
        return self.model_dump(by_alias=True, mode="json")
