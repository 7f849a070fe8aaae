"""Bad specs get a clear error naming the field; good ones parse with their defaults."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from model_operator.api import InvalidSpecError, parse_duration, parse_spec
from model_operator.api.durations import format_duration


def with_changes(**paths: Any) -> dict[str, Any]:
    """A minimal valid spec with dotted paths replaced; `...` removes the field."""
    spec: dict[str, Any] = {"model": {"uri": "pvc://models/tiny-gpt2"}}
    for dotted, value in paths.items():
        keys = dotted.split("__")
        node = spec
        for key in keys[:-1]:
            node = node.setdefault(key, {})
        if value is ...:
            node.pop(keys[-1], None)
        else:
            node[keys[-1]] = copy.deepcopy(value)
    return spec


BAD_SPECS = [
    # (case id, spec, the field the error must name, words the error must contain)
    ("no-model", {}, "spec.model", "Field required"),
    ("no-uri", {"model": {}}, "spec.model.uri", "Field required"),
    ("uri-unknown-scheme", with_changes(model__uri="s3://bucket/model"), "spec.model.uri", "String should match"),
    ("uri-no-scheme", with_changes(model__uri="/models/x"), "spec.model.uri", "String should match"),
    ("uri-empty-pvc", with_changes(model__uri="pvc://"), "spec.model.uri", "String should match"),
    ("uri-hf-no-name", with_changes(model__uri="hf://justorg"), "spec.model.uri", "String should match"),
    ("uri-not-string", with_changes(model__uri=42), "spec.model.uri", "valid string"),
    ("task-unknown", with_changes(model__task="translation"), "spec.model.task", "'text-generation'"),
    ("dtype-unknown", with_changes(model__dtype="int4"), "spec.model.dtype", "'auto'"),
    ("model-unknown-field", with_changes(model__revision="main"), "spec.model.revision", "Extra inputs"),
    ("replicas-zero", with_changes(runtime__replicas=0), "spec.runtime.replicas", "greater than or equal to 1"),
    ("replicas-huge", with_changes(runtime__replicas=5000), "spec.runtime.replicas", "less than or equal to 1000"),
    ("replicas-text", with_changes(runtime__replicas="two"), "spec.runtime.replicas", "valid integer"),
    ("gpus-negative", with_changes(runtime__gpus=-1), "spec.runtime.gpus", "greater than or equal to 0"),
    ("gpus-too-many", with_changes(runtime__gpus=64), "spec.runtime.gpus", "less than or equal to 16"),
    (
        "batch-zero",
        with_changes(runtime__batching={"maxBatchSize": 0}),
        "spec.runtime.batching.maxBatchSize",
        "greater than or equal to 1",
    ),
    (
        "batch-wait-negative",
        with_changes(runtime__batching={"maxBatchWaitMs": -5}),
        "spec.runtime.batching.maxBatchWaitMs",
        "greater than or equal to 0",
    ),
    (
        "max-input-zero",
        with_changes(runtime__limits={"maxInputTokens": 0}),
        "spec.runtime.limits.maxInputTokens",
        "greater than or equal to 1",
    ),
    (
        "timeout-zero",
        with_changes(runtime__limits={"requestTimeoutSeconds": 0}),
        "spec.runtime.limits.requestTimeoutSeconds",
        "greater than 0",
    ),
    (
        "truncation-unknown",
        with_changes(runtime__limits={"truncation": "keep-first"}),
        "spec.runtime.limits.truncation",
        "'error'",
    ),
    ("env-bad-name", with_changes(runtime__env=[{"name": "1BAD"}]), "spec.runtime.env[0].name", "String should match"),
    (
        "toleration-bad-effect",
        with_changes(runtime__tolerations=[{"key": "a", "effect": "Sometimes"}]),
        "spec.runtime.tolerations[0].effect",
        "'NoSchedule'",
    ),
    ("runtime-unknown-field", with_changes(runtime__gpu=1), "spec.runtime.gpu", "Extra inputs"),
    ("traffic-mode-unknown", with_changes(traffic__mode="istio"), "spec.traffic.mode", "'router'"),
    (
        "mirror-over-100",
        with_changes(traffic__mirrorPercent=150),
        "spec.traffic.mirrorPercent",
        "less than or equal to 100",
    ),
    (
        "mirror-negative",
        with_changes(traffic__mirrorPercent=-1),
        "spec.traffic.mirrorPercent",
        "greater than or equal to 0",
    ),
    (
        "gateway-mode-without-gateway",
        with_changes(traffic__mode="gatewayAPI"),
        "spec.traffic",
        "traffic.gateway is required",
    ),
    (
        "gateway-no-parents",
        with_changes(traffic__mode="gatewayAPI", traffic__gateway={"parentRefs": []}),
        "spec.traffic.gateway.parentRefs",
        "at least 1 item",
    ),
    (
        "sticky-header-spaces",
        with_changes(traffic__stickyHeader="x user"),
        "spec.traffic.stickyHeader",
        "String should match",
    ),
    ("steps-empty", with_changes(rollout__steps=[]), "spec.rollout.steps", "at least 1 item"),
    (
        "step-weight-zero",
        with_changes(rollout__steps=[{"weight": 0}]),
        "spec.rollout.steps[0].weight",
        "greater than 0",
    ),
    (
        "step-weight-100",
        with_changes(rollout__steps=[{"weight": 100}]),
        "spec.rollout.steps[0].weight",
        "less than 100",
    ),
    (
        "steps-falling",
        with_changes(rollout__steps=[{"weight": 50}, {"weight": 10}]),
        "spec.rollout.steps",
        "strictly rising",
    ),
    (
        "steps-repeated",
        with_changes(rollout__steps=[{"weight": 20}, {"weight": 20}]),
        "spec.rollout.steps",
        "strictly rising",
    ),
    (
        "step-pause-garbage",
        with_changes(rollout__steps=[{"weight": 10, "pause": "soon"}]),
        "spec.rollout.steps[0].pause",
        "String should match",
    ),
    (
        "step-pause-negative",
        with_changes(rollout__steps=[{"weight": 10, "pause": "-5s"}]),
        "spec.rollout.steps[0].pause",
        "String should match",
    ),
    (
        "interval-no-unit",
        with_changes(rollout__analysis={"interval": "10"}),
        "spec.rollout.analysis.interval",
        "String should match",
    ),
    (
        "interval-under-a-second",
        with_changes(rollout__analysis={"interval": "1ms"}),
        "spec.rollout.analysis.interval",
        "at least 1s",
    ),
    (
        "interval-zero",
        with_changes(rollout__analysis={"interval": "0s"}),
        "spec.rollout.analysis.interval",
        "at least 1s",
    ),
    (
        "no-data-timeout-zero",
        with_changes(rollout__analysis={"noDataTimeout": "0.0000000001s"}),
        "spec.rollout.analysis.noDataTimeout",
        "at least 1s",
    ),
    (
        "min-requests-zero",
        with_changes(rollout__analysis={"minRequests": 0}),
        "spec.rollout.analysis.minRequests",
        "greater than or equal to 1",
    ),
    (
        "confidence-one",
        with_changes(rollout__analysis={"confidence": 1.0}),
        "spec.rollout.analysis.confidence",
        "less than 1",
    ),
    (
        "p99-zero",
        with_changes(rollout__analysis={"thresholds": {"p99LatencySeconds": 0}}),
        "spec.rollout.analysis.thresholds.p99LatencySeconds",
        "greater than 0",
    ),
    (
        "error-rate-negative",
        with_changes(rollout__analysis={"thresholds": {"errorRate": -0.1}}),
        "spec.rollout.analysis.thresholds.errorRate",
        "greater than 0",
    ),
    (
        "drift-over-one",
        with_changes(rollout__analysis={"thresholds": {"drift": 2}}),
        "spec.rollout.analysis.thresholds.drift",
        "less than or equal to 1",
    ),
    (
        "latency-ratio-below-one",
        with_changes(rollout__analysis={"thresholds": {"maxLatencyRatio": 0.9}}),
        "spec.rollout.analysis.thresholds.maxLatencyRatio",
        "greater than 1",
    ),
    (
        "on-no-data-unknown",
        with_changes(rollout__analysis={"onNoData": "panic"}),
        "spec.rollout.analysis.onNoData",
        "'pause'",
    ),
    (
        "prometheus-url-no-scheme",
        with_changes(rollout__analysis={"prometheusUrl": "prometheus:9090"}),
        "spec.rollout.analysis.prometheusUrl",
        "String should match",
    ),
    (
        "deadline-zero",
        with_changes(rollout__progressDeadlineSeconds=0),
        "spec.rollout.progressDeadlineSeconds",
        "greater than or equal to 1",
    ),
    (
        "scale-down-negative",
        with_changes(rollout__abortScaleDownDelaySeconds=-1),
        "spec.rollout.abortScaleDownDelaySeconds",
        "greater than or equal to 0",
    ),
    ("paused-not-bool", with_changes(paused="maybe"), "spec.paused", "valid boolean"),
    ("top-level-unknown", with_changes(replicas=3), "spec.replicas", "Extra inputs"),
    (
        "env-owned-by-the-operator",
        with_changes(runtime__env=[{"name": "MODELSHIP_MODEL_PATH", "value": "/x"}]),
        "spec",
        "set by the operator",
    ),
    (
        "no-data-timeout-shorter-than-interval",
        with_changes(rollout__analysis={"interval": "1m", "noDataTimeout": "30s"}),
        "spec",
        "shorter than",
    ),
]


@pytest.mark.parametrize(
    ("spec", "field", "words"), [case[1:] for case in BAD_SPECS], ids=[case[0] for case in BAD_SPECS]
)
def test_bad_spec_names_the_field(spec: dict[str, Any], field: str, words: str) -> None:
    with pytest.raises(InvalidSpecError) as caught:
        parse_spec(spec)
    lines = caught.value.problems
    assert any(line.startswith(f"{field}:") and words in line for line in lines), lines


def test_there_are_at_least_thirty_bad_specs() -> None:
    assert len(BAD_SPECS) >= 30
    assert len({case[0] for case in BAD_SPECS}) == len(BAD_SPECS)


@pytest.mark.parametrize("raw", [None, "text", 3, ["model"]])
def test_spec_that_is_not_an_object(raw: Any) -> None:
    with pytest.raises(InvalidSpecError, match="spec: must be an object"):
        parse_spec(raw)


def test_defaults_fill_a_minimal_spec(minimal_spec: dict[str, Any]) -> None:
    spec = parse_spec(minimal_spec)
    assert spec.model.task == "text-generation"
    assert spec.runtime.replicas == 1
    assert spec.runtime.batching.max_batch_size == 16
    assert spec.traffic.mode == "router"
    assert [(s.weight, s.pause) for s in spec.rollout.steps] == [(10, "30s"), (50, "60s")]
    assert spec.rollout.analysis.on_no_data == "pause"


def test_wire_form_round_trips(minimal_spec: dict[str, Any]) -> None:
    spec = parse_spec(minimal_spec)
    assert parse_spec(spec.to_api()) == spec
    assert "maxBatchSize" in spec.to_api()["runtime"]["batching"]


def test_several_problems_are_all_reported() -> None:
    spec = with_changes(runtime__replicas=0, traffic__mode="istio")
    with pytest.raises(InvalidSpecError) as caught:
        parse_spec(spec)
    assert len(caught.value.problems) == 2


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("500ms", 0.5),
        ("30s", 30),
        ("1m30s", 90),
        ("2h", 7200),
        ("1.5h", 5400),
        ("0s", 0),
    ],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "10", "s", "-1s", "1d", "1 m", "1m 30s", "ten seconds"])
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="is not a duration"):
        parse_duration(text)


@pytest.mark.parametrize(("seconds", "text"), [(0.5, "500ms"), (30, "30s"), (90, "1m30s"), (7200, "2h"), (0, "0s")])
def test_format_duration_round_trips(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text
    assert parse_duration(format_duration(seconds)) == pytest.approx(seconds)
