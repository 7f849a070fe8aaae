"""The runtime's Prometheus metrics (DESIGN.md section 5), labelled with the pod's namespace,
ModelDeployment and revision so queries work whatever relabelling the user's Prometheus does."""

from __future__ import annotations

from collections.abc import Callable
from contextvars import ContextVar
from typing import TypeVar

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from . import __version__
from .contract import (
    BUILD_INFO,
    CHOICES_TOTAL,
    CODE_LABEL,
    CONFIG_LABEL,
    DEFAULT_LATENCY_BUCKETS,
    ENDPOINT_LABEL,
    IDENTITY_LABELS,
    KV_CACHE_CAPACITY,
    KV_CACHE_USAGE,
    MODEL_READY,
    OUTCOME_LABEL,
    REQUEST_DURATION,
    REQUESTS_TOTAL,
    REQUESTS_WAITING,
    SEQUENCES_RUNNING,
    SOURCE_LABEL,
    SOURCE_USER,
    TIME_TO_FIRST_TOKEN,
    TOKENIZER_LABEL,
)

STEP_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 1.0, 2.0, 5.0)
BATCH_BUCKETS = (1, 2, 4, 8, 12, 16, 24, 32, 48, 64, 128, 256)
Metric = TypeVar("Metric", Counter, Gauge, Histogram)
# Who sent the request being answered (set by the HTTP layer), for the series counted deep inside it.
REQUEST_SOURCE: ContextVar[str] = ContextVar("request_source", default=SOURCE_USER)


class RuntimeMetrics:
    """Every metric of one runtime process, in its own registry (tests create many)."""

    def __init__(
        self,
        namespace: str,
        model_deployment: str,
        revision: str,
        latency_buckets: tuple[float, ...] = DEFAULT_LATENCY_BUCKETS,
    ) -> None:
        self.registry = CollectorRegistry()
        # An empty identity label is left out rather than exported as "": under honor_labels an exposed empty
        # label wins over the one Prometheus gives the pod, so a runtime not run by ModelShip (a `custom`
        # server) would lose the identity its pod's labels give it.
        given = zip(IDENTITY_LABELS, (namespace, model_deployment, revision), strict=True)
        self.identity = {label: value for label, value in given if value}
        identity = tuple(self.identity)  # the label names every series of this process starts with
        r = self.registry
        self.request_duration = Histogram(
            REQUEST_DURATION,
            "Request latency, end to end, by endpoint and source (user traffic or the router's mirror probes).",
            [*identity, ENDPOINT_LABEL, SOURCE_LABEL],
            buckets=latency_buckets,
            registry=r,
        )
        self.requests = Counter(
            REQUESTS_TOTAL,
            "Requests answered, by endpoint, HTTP code (499: the client hung up) and source.",
            [*identity, ENDPOINT_LABEL, CODE_LABEL, SOURCE_LABEL],
            registry=r,
        )
        self.choices = Counter(
            CHOICES_TOTAL,
            "Generated choices answered, by endpoint, source and what their content is (ok, empty, undecodable, "
            "invalid_json when JSON was asked for, truncated by max_tokens).",
            [*identity, ENDPOINT_LABEL, SOURCE_LABEL, OUTCOME_LABEL],
            registry=r,
        )
        self.queue_duration = Histogram(
            "modelship_queue_duration_seconds",
            "Time a request waited in the queue.",
            identity,
            buckets=latency_buckets,
            registry=r,
        )
        self.prefill_duration = Histogram(
            "modelship_prefill_duration_seconds",
            "Prompt processing time of each request's batch.",
            identity,
            buckets=latency_buckets,
            registry=r,
        )
        self.decode_step_duration = Histogram(
            "modelship_decode_step_duration_seconds",
            "Time of one decode step of the running batch.",
            identity,
            buckets=STEP_BUCKETS,
            registry=r,
        )
        self.time_to_first_token = Histogram(
            TIME_TO_FIRST_TOKEN,
            "From arrival to the first generated token.",
            identity,
            buckets=latency_buckets,
            registry=r,
        )
        self.batch_size = Histogram(
            "modelship_batch_size", "Sequences in each forward pass.", identity, buckets=BATCH_BUCKETS, registry=r
        )
        self.prompt_tokens = Counter("modelship_prompt_tokens_total", "Prompt tokens processed.", identity, registry=r)
        self.generation_tokens = Counter("modelship_generation_tokens_total", "Tokens generated.", identity, registry=r)
        self.running = Gauge("modelship_requests_running", "Requests being processed.", identity, registry=r)
        self.waiting = Gauge(
            REQUESTS_WAITING, "Requests queued for the model, not yet in its batch.", identity, registry=r
        )
        self.sequences_running = Gauge(
            SEQUENCES_RUNNING,
            "Sequences in the running batch, as vLLM's num_requests_running.",
            identity,
            registry=r,
        )
        self.kv_cache_usage_ratio = Gauge(
            KV_CACHE_USAGE,
            "Share of the KV-cache budget the running batch holds (0..1), as vLLM's kv_cache_usage_perc.",
            identity,
            registry=r,
        )
        self.kv_cache_capacity = Gauge(
            KV_CACHE_CAPACITY,
            "Tokens of KV cache this runtime admits sequences into (their worst case must fit).",
            identity,
            registry=r,
        )
        self.input_drift = Gauge(
            "modelship_input_drift_score",
            "Jensen-Shannon divergence of recent prompts from the reference window (0..1).",
            identity,
            registry=r,
        )
        self.model_ready = Gauge(
            MODEL_READY, "1 when the model is loaded, warmed up and not draining.", identity, registry=r
        )
        self.build_info = Gauge(
            BUILD_INFO,
            "Version and model of this runtime, with fingerprints of its tokenizer and model config.",
            [*identity, "version", "task", "device", "dtype", TOKENIZER_LABEL, CONFIG_LABEL],
            registry=r,
        )
        self._version = __version__

    def _own(self, metric: Metric) -> Metric:
        """The process's series of a metric labelled by its identity only: the bare metric without one."""
        return metric.labels(**self.identity) if self.identity else metric

    def describe_model(self, task: str, device: str, dtype: str, tokenizer: str = "", config: str = "") -> None:
        self.build_info.labels(
            **self.identity,
            version=self._version,
            task=task,
            device=device,
            dtype=dtype,
            **{TOKENIZER_LABEL: tokenizer, CONFIG_LABEL: config},
        ).set(1)

    def bind_running(self, running: Callable[[], float]) -> None:
        """Requests admitted and not yet answered (queued for the model or generating)."""
        self._own(self.running).set_function(running)

    def bind_gauges(self, waiting: Callable[[], float], drift: Callable[[], float | None]) -> None:
        self._own(self.waiting).set_function(waiting)
        self._own(self.sequences_running).set(0)
        self._own(self.input_drift).set_function(lambda: drift() or 0.0)

    def choice(self, endpoint: str, outcome: str) -> None:
        self.choices.labels(**self.identity, endpoint=endpoint, source=REQUEST_SOURCE.get(), outcome=outcome).inc()

    def request(self, endpoint: str, code: int, seconds: float, source: str = SOURCE_USER) -> None:
        self.requests.labels(**self.identity, endpoint=endpoint, code=str(code), source=source).inc()
        self.request_duration.labels(**self.identity, endpoint=endpoint, source=source).observe(seconds)

    def tokens(self, prompt: int, generated: int) -> None:
        self._own(self.prompt_tokens).inc(prompt)
        self._own(self.generation_tokens).inc(generated)

    def ready(self, value: bool) -> None:
        self._own(self.model_ready).set(1 if value else 0)

    def render(self) -> bytes:
        return generate_latest(self.registry)

    # The engine's hooks (EngineMetrics).
    def batch(self, size: int) -> None:
        self._own(self.batch_size).observe(size)

    def queued(self, seconds: float) -> None:
        self._own(self.queue_duration).observe(seconds)

    def prefill(self, seconds: float) -> None:
        self._own(self.prefill_duration).observe(seconds)

    def decode(self, seconds: float) -> None:
        self._own(self.decode_step_duration).observe(seconds)

    def first_token(self, seconds: float) -> None:
        self._own(self.time_to_first_token).observe(seconds)

    def running_sequences(self, count: int) -> None:
        self._own(self.sequences_running).set(count)

    def kv_cache_usage(self, ratio: float) -> None:
        self._own(self.kv_cache_usage_ratio).set(ratio)

    def kv_capacity(self, tokens: int) -> None:
        self._own(self.kv_cache_capacity).set(tokens)
