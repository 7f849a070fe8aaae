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


CUSTOM_METRICS = {
    "requests": "http_requests_total",
    "serverErrorsMatch": ['status=~"5.."'],
    "latency": "http_request_duration_seconds",
}


def with_custom_metrics(change: dict[str, Any]) -> dict[str, Any]:
    """A custom server whose runtime.custom.metrics are CUSTOM_METRICS with `change`."""
    metrics = {**CUSTOM_METRICS, **change}
    return with_changes(
        runtime__server="custom", runtime__image="example/server:1", runtime__custom={"port": 8000, "metrics": metrics}
    )


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
        "must be a duration such as",
    ),
    (
        "step-pause-negative",
        with_changes(rollout__steps=[{"weight": 10, "pause": "-5s"}]),
        "spec.rollout.steps[0].pause",
        "must be a duration such as",
    ),
    (
        "interval-no-unit",
        with_changes(rollout__analysis={"interval": "10"}),
        "spec.rollout.analysis.interval",
        "must be a duration such as",
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
        with_changes(rollout__analysis={"noDataTimeout": "0.000000001s"}),
        "spec.rollout.analysis.noDataTimeout",
        "at least 1s",
    ),
    (
        "no-data-timeout-below-a-nanosecond",
        with_changes(rollout__analysis={"noDataTimeout": "0.0000000001s"}),
        "spec.rollout.analysis.noDataTimeout",
        "must be a duration such as",
    ),
    (
        "pause-beyond-go-durations",
        with_changes(rollout__steps=[{"weight": 10, "pause": "2562048h"}]),
        "spec.rollout.steps[0].pause",
        "at most 4 parts, each number at most 5 digits",
    ),
    (
        "interval-many-parts",
        with_changes(rollout__analysis={"interval": "1h1h1h1h1h"}),
        "spec.rollout.analysis.interval",
        "must be a duration such as",
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
        "prometheus-url-trailing-newline",
        with_changes(rollout__analysis={"prometheusUrl": "http://prometheus:9090\n"}),
        "spec.rollout.analysis.prometheusUrl",
        "String should match",
    ),
    (
        "prometheus-url-no-host",
        with_changes(rollout__analysis={"prometheusUrl": "http:///api"}),
        "spec.rollout.analysis.prometheusUrl",
        "String should match",
    ),
    (
        "cpu-not-a-quantity",
        with_changes(runtime__resources={"limits": {"cpu": "lots"}}),
        "spec.runtime.resources.limits.cpu",
        "is not a quantity",
    ),
    (
        "memory-negative",
        with_changes(runtime__resources={"requests": {"memory": -1}}),
        "spec.runtime.resources.requests.memory",
        "is not a quantity",
    ),
    (
        "min-requests-text",
        with_changes(rollout__analysis={"minRequests": "5"}),
        "spec.rollout.analysis.minRequests",
        "valid integer",
    ),
    ("weight-text", with_changes(rollout__steps=[{"weight": "10"}]), "spec.rollout.steps[0].weight", "valid integer"),
    (
        "weight-fraction",
        with_changes(rollout__steps=[{"weight": 10.5}]),
        "spec.rollout.steps[0].weight",
        "valid integer",
    ),
    ("mirror-text", with_changes(traffic__mirrorPercent="5"), "spec.traffic.mirrorPercent", "valid number"),
    (
        "api-key-secret-not-a-name",
        with_changes(runtime__apiKeySecret={"name": "ftp://p"}),
        "spec.runtime.apiKeySecret.name",
        "String should match",
    ),
    (
        "api-key-secret-key-with-slash",
        with_changes(runtime__apiKeySecret={"name": "keys", "key": "a/b"}),
        "spec.runtime.apiKeySecret.key",
        "String should match",
    ),
    ("paused-text-true", with_changes(paused="true"), "spec.paused", "valid boolean"),
    ("paused-one", with_changes(paused=1), "spec.paused", "valid boolean"),
    ("replicas-bool", with_changes(runtime__replicas=True), "spec.runtime.replicas", "valid integer"),
    (
        "min-requests-beyond-int64",
        with_changes(rollout__analysis={"minRequests": 2**63}),
        "spec.rollout.analysis.minRequests",
        "less than or equal to 1000000000",
    ),
    (
        "toleration-seconds-beyond-int64",
        with_changes(runtime__tolerations=[{"key": "k", "effect": "NoExecute", "tolerationSeconds": 10**38}]),
        "spec.runtime.tolerations[0].tolerationSeconds",
        "does not fit in a 64-bit integer",
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
    (
        "validation-without-prompts",
        with_changes(rollout__validation={"maxDivergence": 0.2}),
        "spec.rollout.validation",
        "validation needs prompts or promptsFrom",
    ),
    (
        "golden-prompt-and-messages",
        with_changes(
            rollout__validation={
                "prompts": [{"name": "a", "prompt": "x", "messages": [{"role": "user", "content": "y"}]}]
            }
        ),
        "spec.rollout.validation.prompts[0]",
        "exactly one of prompt or messages",
    ),
    (
        "golden-prompt-bad-name",
        with_changes(rollout__validation={"prompts": [{"name": "Not A Name", "prompt": "x"}]}),
        "spec.rollout.validation.prompts[0].name",
        "String should match",
    ),
    (
        "golden-max-tokens-huge",
        with_changes(rollout__validation={"prompts": [{"name": "a", "prompt": "x", "maxTokens": 5000}]}),
        "spec.rollout.validation.prompts[0].maxTokens",
        "less than or equal to 256",
    ),
    (
        "golden-expectation-empty",
        with_changes(rollout__validation={"prompts": [{"name": "a", "prompt": "x", "expect": {}}]}),
        "spec.rollout.validation.prompts[0].expect",
        "needs contains, regex, validJson or jsonSchema",
    ),
    (
        "golden-regex-broken",
        with_changes(rollout__validation={"prompts": [{"name": "a", "prompt": "x", "expect": {"regex": "(unclosed"}}]}),
        "spec.rollout.validation.prompts[0].expect.regex",
        "does not compile",
    ),
    (
        "golden-json-schema-broken",
        with_changes(
            rollout__validation={"prompts": [{"name": "a", "prompt": "x", "expect": {"jsonSchema": {"type": 5}}}]}
        ),
        "spec.rollout.validation.prompts[0].expect.jsonSchema",
        "is not a valid JSON Schema",
    ),
    (
        "validation-timeout-garbage",
        with_changes(rollout__validation={"promptsFrom": {"name": "golden"}, "timeout": "soon"}),
        "spec.rollout.validation.timeout",
        "timeout must be a duration",
    ),
    (
        "validation-divergence-over-one",
        with_changes(rollout__validation={"promptsFrom": {"name": "golden"}, "maxDivergence": 2}),
        "spec.rollout.validation.maxDivergence",
        "less than or equal to 1",
    ),
    (
        "validation-with-api-key",
        with_changes(rollout__validation={"promptsFrom": {"name": "golden"}}, runtime__apiKeySecret={"name": "key"}),
        "spec",
        "cannot be used with runtime.apiKeySecret",
    ),
    ("server-unknown", with_changes(runtime__server="tgi"), "spec.runtime.server", "'modelship', 'vllm'"),
    (
        "custom-server-without-image",
        with_changes(runtime__server="custom", runtime__custom={"port": 8000}),
        "spec.runtime",
        "needs runtime.image and runtime.custom",
    ),
    (
        "custom-server-without-port",
        with_changes(runtime__server="custom", runtime__image="example/server:1"),
        "spec.runtime",
        "needs runtime.image and runtime.custom",
    ),
    (
        "custom-settings-for-vllm",
        with_changes(runtime__server="vllm", runtime__custom={"port": 8000}),
        "spec.runtime",
        "only read when runtime.server is custom",
    ),
    (
        "custom-port-zero",
        with_changes(runtime__server="custom", runtime__image="example/server:1", runtime__custom={"port": 0}),
        "spec.runtime.custom.port",
        "greater than or equal to 1",
    ),
    (
        "custom-health-path-relative",
        with_changes(
            runtime__server="custom",
            runtime__image="example/server:1",
            runtime__custom={"port": 8000, "healthPath": "health"},
        ),
        "spec.runtime.custom.healthPath",
        "should match pattern",
    ),
    (
        "args-for-modelship",
        with_changes(runtime__args=["--max-model-len", "4096"]),
        "spec.runtime",
        "runtime.args is for the vllm, llamacpp and custom servers",
    ),
    (
        "llamacpp-behind-a-gateway",
        with_changes(
            runtime__server="llamacpp", traffic__mode="gatewayAPI", traffic__gateway={"parentRefs": [{"name": "gw"}]}
        ),
        "spec",
        "need traffic.mode router",
    ),
    (
        "custom-without-metrics-behind-a-gateway",
        with_changes(
            runtime__server="custom",
            runtime__image="example/server:1",
            runtime__custom={"port": 8000},
            traffic__mode="replicas",
        ),
        "spec",
        "need traffic.mode router",
    ),
    (
        "custom-metrics-without-server-errors",
        with_changes(
            runtime__server="custom",
            runtime__image="example/server:1",
            runtime__custom={"port": 8000, "metrics": {"requests": "http_requests_total", "latency": "h"}},
        ),
        "spec.runtime.custom.metrics.serverErrorsMatch",
        "Field required",
    ),
    (
        "custom-metrics-matcher-unquoted",
        with_custom_metrics({"requestsMatch": ["handler=/v1/completions"]}),
        "spec.runtime.custom.metrics.requestsMatch[0]",
        "should match pattern",
    ),
    (
        "custom-metrics-matcher-adds-to-the-query",
        with_custom_metrics({"latencyMatch": ['a="1"}) or vector(1']}),
        "spec.runtime.custom.metrics.latencyMatch[0]",
        "should match pattern",
    ),
    (
        "custom-metrics-metric-name-bad",
        with_custom_metrics({"requests": "http-requests"}),
        "spec.runtime.custom.metrics.requests",
        "should match pattern",
    ),
    (
        "custom-metrics-matcher-names-the-revision",
        with_custom_metrics({"requestsMatch": ['revision!="x"']}),
        "spec.runtime.custom.metrics",
        "cannot name namespace, model_deployment or revision",
    ),
    (
        "custom-metrics-regex-broken",
        with_custom_metrics({"serverErrorsMatch": ['status=~"5(.."']}),
        "spec.runtime.custom.metrics",
        "does not compile as a Python regular expression",
    ),
    (
        "llamacpp-with-validation",
        with_changes(runtime__server="llamacpp", rollout__validation={"promptsFrom": {"name": "golden"}}),
        "spec",
        "rollout.validation needs runtime.server modelship",
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


def test_whole_numbers_count_as_integers_as_in_the_api_server() -> None:
    spec = parse_spec(
        with_changes(
            runtime__replicas=2.0,
            rollout__steps=[{"weight": 1e1}],
            runtime__tolerations=[{"key": "k", "effect": "NoExecute", "tolerationSeconds": 30.0}],
        )
    )
    assert (spec.runtime.replicas, spec.rollout.steps[0].weight) == (2, 10)
    assert type(spec.runtime.replicas) is int
    assert spec.runtime.tolerations[0].toleration_seconds == 30


def test_integers_count_as_numbers() -> None:
    assert parse_spec(with_changes(traffic__mirrorPercent=5)).traffic.mirror_percent == 5.0


@pytest.mark.parametrize("quantity", ["500m", "2", "1.5", "8Gi", "128974848", "129e6", "123Mi", ".5", 2, 0, 4.0])
def test_quantities_kubernetes_accepts(quantity: object) -> None:
    spec = parse_spec(with_changes(runtime__resources={"limits": {"cpu": quantity}}))
    assert spec.runtime.resources.limits["cpu"] == quantity


@pytest.mark.parametrize("quantity", ["lots", "-1", "1.5.5", "8 Gi", "8GiB", "1e", "", True, 1.5])
def test_quantities_kubernetes_refuses(quantity: object) -> None:
    with pytest.raises(InvalidSpecError, match=r"spec\.runtime\.resources\.limits\.cpu"):
        parse_spec(with_changes(runtime__resources={"limits": {"cpu": quantity}}))


@pytest.mark.parametrize(
    "url",
    ["http://prometheus:9090", "https://prom.example.com/api/prefix", "http://10.0.0.1:9090/?x=1", "http://u@h:1"],
)
def test_prometheus_urls_with_a_host(url: str) -> None:
    assert parse_spec(with_changes(rollout__analysis={"prometheusUrl": url})).rollout.analysis.prometheus_url == url


@pytest.mark.parametrize("url", ["http://", "http://a b", "http://host/\tpath", " http://host", "ftp://host"])
def test_prometheus_urls_refused(url: str) -> None:
    with pytest.raises(InvalidSpecError, match="prometheusUrl"):
        parse_spec(with_changes(rollout__analysis={"prometheusUrl": url}))


@pytest.mark.parametrize(
    ("text", "nanoseconds"),
    [
        ("1s", 10**9),
        ("999.999999999ms", 999_999_999),  # Go truncates the sub-nanosecond part
        ("0.999999999s", 999_999_999),
        ("300ms700ms", 10**9),
        ("1.5h", 5400 * 10**9),
        ("99999h99999h99999h99999h", 4 * 99999 * 3600 * 10**9),
    ],
)
def test_duration_nanoseconds_as_go_parses_them(text: str, nanoseconds: int) -> None:
    from model_operator.api.durations import duration_nanoseconds

    assert duration_nanoseconds(text) == nanoseconds
    assert duration_nanoseconds(text) < 2**63  # inside Go's duration range, whatever the grammar allows


@pytest.mark.parametrize(("interval", "accepted"), [("1s", True), ("1000ms", True), ("999.999999999ms", False)])
def test_interval_floor_is_exact(interval: str, accepted: bool) -> None:
    spec = with_changes(rollout__analysis={"interval": interval})
    if accepted:
        parse_spec(spec)
    else:
        with pytest.raises(InvalidSpecError, match="interval must be at least 1s"):
            parse_spec(spec)
