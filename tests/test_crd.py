"""The committed CRD is exactly what the generator makes, and it is a structural, validating schema."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from model_operator.api import crd as crdgen
from model_operator.api import parse_spec
from model_operator.api import spec as spec_module
from tests.test_api_validation import BAD_SPECS, with_changes

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("path", crdgen.CRD_PATHS, ids=lambda p: str(p.relative_to(REPO)))
def test_committed_crd_matches_the_generator(path: Path) -> None:
    assert path.exists(), f"{path} is missing: run `python -m model_operator.api.crd`"
    assert path.read_text() == crdgen.render(), f"{path} is stale: run `python -m model_operator.api.crd`"


def _schema() -> dict[str, Any]:
    schema: dict[str, Any] = crdgen.crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return schema


def _walk(node: dict[str, Any], path: str = "") -> list[tuple[str, dict[str, Any]]]:
    found = [(path, node)]
    for name, child in node.get("properties", {}).items():
        found += _walk(child, f"{path}.{name}")
    if isinstance(node.get("items"), dict):
        found += _walk(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        found += _walk(node["additionalProperties"], f"{path}{{}}")
    return found


def test_schema_is_structural() -> None:
    for path, node in _walk(_schema()):
        assert "$ref" not in node, path
        assert "$defs" not in node, path
        assert "type" in node or node.get("x-kubernetes-int-or-string"), f"{path} has no type"
        assert "title" not in node, path
        assert node.get("additionalProperties") is not False, path
        assert "default" not in node or node["default"] is not None, path
        if "anyOf" in node:
            assert node.get("x-kubernetes-int-or-string"), f"{path}: anyOf only for int-or-string"


def test_every_spec_field_is_documented() -> None:
    for path, node in _walk(_schema()["properties"]["spec"], "spec"):
        if path.endswith("{}") or (path.endswith("[]") and node.get("type") != "object"):
            continue
        assert node.get("description"), f"{path} has no description"


def test_names_printer_columns_and_status() -> None:
    spec = crdgen.crd()["spec"]
    assert spec["names"]["shortNames"] == ["mdep"]
    assert spec["names"]["categories"] == ["modelship"]
    version = spec["versions"][0]
    assert version["subresources"] == {"status": {}}
    assert [c["name"] for c in version["additionalPrinterColumns"]] == ["Phase", "Stable", "Canary", "Weight", "Age"]


def _rules() -> list[str]:
    return [rule["message"] for _, node in _walk(_schema()) for rule in node.get("x-kubernetes-validations", [])]


@pytest.mark.parametrize(
    "message",
    [
        "steps' weights must be strictly rising",
        "uri must use one of the schemes pvc://, file:// or hf://",
        "interval must be at least 1s (each look queries Prometheus)",
        "noDataTimeout must be at least 1s",
        "pause must be a duration such as 500ms, 30s, 1m30s or 2h (at most 4 parts, each number at most 5 digits)",
        "traffic.gateway is required when traffic.mode is gatewayAPI",
        spec_module.CUSTOM_NEEDS,
        spec_module.CUSTOM_ONLY,
        spec_module.ARGS_NOT_FOR_MODELSHIP,
        spec_module.UNMAPPED_SERVER_NEEDS_ROUTER,
        spec_module.VALIDATION_NEEDS_MODELSHIP,
    ],
)
def test_cel_rules_are_in_the_crd(message: str) -> None:
    assert message in _rules()


def _validator() -> jsonschema.Draft4Validator:
    # Draft 4 is the dialect of Kubernetes' OpenAPI v3 schemas (boolean exclusiveMinimum).
    return jsonschema.Draft4Validator(_schema()["properties"]["spec"])


OPENAPI_CATCHES = [
    case
    for case in BAD_SPECS
    if case[0]
    not in {
        # Cross-field and list rules are CEL (x-kubernetes-validations), which jsonschema does not run;
        # the e2e suite checks that the API server rejects them.
        "steps-falling",
        "steps-repeated",
        "gateway-mode-without-gateway",
        "validation-without-prompts",
        "golden-prompt-and-messages",
        "golden-expectation-empty",
        "validation-with-api-key",
        "validation-timeout-garbage",
        "custom-server-without-image",
        "custom-server-without-port",
        "custom-settings-for-vllm",
        "args-for-modelship",
        "llamacpp-behind-a-gateway",
        "custom-without-metrics-behind-a-gateway",
        "custom-metrics-matcher-names-the-revision",
        "custom-metrics-regex-broken",  # operator only: the API server does not compile the regex either
        "llamacpp-with-validation",
        "interval-under-a-second",
        "interval-zero",
        "no-data-timeout-zero",
        # Durations are shaped by CEL too, so that the API server's messages are the models' own.
        "step-pause-garbage",
        "step-pause-negative",
        "interval-no-unit",
        "no-data-timeout-below-a-nanosecond",
        "pause-beyond-go-durations",
        "interval-many-parts",
        # Python's `re` lets `$` match before a trailing newline; the API server's RE2 (like pydantic's
        # engine) does not. The e2e agreement test sends this one to the real API server.
        "prometheus-url-trailing-newline",
        # Integers beyond int64 are refused by the API server's JSON decoding, not by a schema bound.
        "toleration-seconds-beyond-int64",
        # Unknown fields are pruned (or refused by kubectl's strict field validation), not schema errors.
        "model-unknown-field",
        "runtime-unknown-field",
        "top-level-unknown",
        # Judged by the operator (condition InvalidSpec), not by the API server.
        "env-owned-by-the-operator",
        "no-data-timeout-shorter-than-interval",
        "golden-regex-broken",
        "golden-json-schema-broken",
    }
]


@pytest.mark.parametrize("spec", [c[1] for c in OPENAPI_CATCHES], ids=[c[0] for c in OPENAPI_CATCHES])
def test_openapi_schema_rejects_what_the_models_reject(spec: dict[str, Any]) -> None:
    assert list(_validator().iter_errors(spec)), "the generated schema accepted a spec the models refuse"


def test_openapi_schema_accepts_a_full_spec() -> None:
    spec = with_changes(
        runtime__resources={"limits": {"cpu": 2, "memory": "1Gi"}},
        runtime__env=[{"name": "A", "value": "b"}, {"name": "S", "valueFrom": {"secretKeyRef": {"name": "s"}}}],
        traffic__mode="gatewayAPI",
        traffic__gateway={"parentRefs": [{"name": "gw"}]},
        rollout__steps=[{"weight": 5, "pause": "1m30s"}, {"weight": 50}],
    )
    assert not list(_validator().iter_errors(spec))


def test_yaml_parses_back() -> None:
    assert yaml.safe_load(crdgen.render()) == crdgen.crd()


def test_field_reference_is_current() -> None:
    from model_operator.api import reference

    assert reference.REFERENCE.read_text() == reference.render(), "run `python -m model_operator.api.reference`"
    text = reference.render()
    assert "| `spec.rollout.steps[].weight` |" in text
    assert "steps' weights must be strictly rising" in text


def _defaulted(node: dict[str, Any], value: Any) -> Any:
    """What the API server stores for `value` under this schema: absent fields with a default get it, in
    objects at every depth (as structural defaulting does)."""
    if not isinstance(value, dict) or node.get("type") != "object":
        return value
    out = dict(value)
    for name, child in node.get("properties", {}).items():
        if name not in out and "default" in child:
            out[name] = copy.deepcopy(child["default"])
        if name in out:
            out[name] = _defaulted(child, out[name])
    return out


@pytest.mark.parametrize(
    "spec",
    [with_changes(), with_changes(rollout__validation={"prompts": [{"name": "a", "prompt": "x"}]})],
    ids=["minimal", "with-validation"],
)
def test_what_the_api_server_defaults_the_models_accept_and_read_alike(spec: dict[str, Any]) -> None:
    """A default of {} on a section with rules of its own (rollout.validation needs prompts) would make the
    API server refuse every spec, or turn a feature on that nobody asked for."""
    stored = _defaulted(_schema()["properties"]["spec"], spec)
    assert parse_spec(stored) == parse_spec(spec)
