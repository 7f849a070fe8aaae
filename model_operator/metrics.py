"""The operator's own Prometheus metrics (DESIGN.md section 5)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from .api.status import Phase

REGISTRY = CollectorRegistry()
ROLLOUTS = Counter(
    "modelship_operator_rollouts_total",
    "Rollouts that ended, by result.",
    ["namespace", "model_deployment", "result"],
    registry=REGISTRY,
)
ANALYSIS_DURATION = Histogram(
    "modelship_operator_analysis_duration_seconds",
    "Time to query and judge a canary, from the look falling due (batching waits up to a slot).",
    ["namespace", "model_deployment"],
    registry=REGISTRY,
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
VALIDATION_DURATION = Histogram(
    "modelship_operator_validation_duration_seconds",
    "Time to send the golden set to canary and stable and judge it, by verdict (Pass, Fail, Error).",
    ["namespace", "model_deployment", "verdict"],
    registry=REGISTRY,
    buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
)
ANALYSIS_BATCH_LOOKS = Histogram(
    "modelship_operator_analysis_batch_looks",
    "ModelDeployments whose analyses went to Prometheus as one query per SLI.",
    registry=REGISTRY,
    buckets=(1, 2, 5, 10, 20, 50),
)
RECONCILE_ERRORS = Counter(
    "modelship_operator_reconcile_errors_total",
    "Reconciles that failed.",
    ["namespace", "model_deployment"],
    registry=REGISTRY,
)
CANARY_WEIGHT = Gauge(
    "modelship_operator_canary_weight",
    "Percent of traffic the canary receives.",
    ["namespace", "model_deployment"],
    registry=REGISTRY,
)
PHASE = Gauge(
    "modelship_operator_phase",
    "1 for the ModelDeployment's current phase.",
    ["namespace", "model_deployment", "phase"],
    registry=REGISTRY,
)
LEADER = Gauge(
    "modelship_operator_leader",
    "1 while this replica holds the leader-election Lease and acts, 0 while it stands by.",
    registry=REGISTRY,
)
PHASES = tuple(phase.value for phase in Phase)


def serve(port: int, host: str) -> None:
    if port:
        start_http_server(port, addr=host, registry=REGISTRY)


def record_state(namespace: str, name: str, phase: str, weight: int) -> None:
    CANARY_WEIGHT.labels(namespace, name).set(weight)
    for candidate in PHASES:
        PHASE.labels(namespace, name, candidate).set(1 if candidate == phase else 0)


def forget(namespace: str, name: str) -> None:
    for gauge, labels in ((CANARY_WEIGHT, (namespace, name)), *((PHASE, (namespace, name, phase)) for phase in PHASES)):
        try:
            gauge.remove(*labels)
        except KeyError:
            continue
