"""ModelDeployment specs for agreement fuzzing, and the two verdicts on each.

Specs come from the generated CRD's own schema (hypothesis-jsonschema) and from mutating real specs (the
examples) one field at a time: wrong types, extreme numbers, unicode, edge durations, quantities and URLs,
deleted and unknown fields. The API server's verdict is `kubectl apply --dry-run=server`; the operator's
is `parse_spec`, then `revision_of` and a short canary through `decide`.
"""

from __future__ import annotations

import copy
import json
import math
import os
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis_jsonschema import from_schema

from e2e.kube import Kubectl
from model_operator.analysis import Outcome
from model_operator.api import InvalidSpecError, ModelDeploymentSpec, ModelDeploymentStatus, Verdict, parse_spec
from model_operator.api import crd as crdgen
from model_operator.api.spec import OPERATOR_ONLY_RULES
from model_operator.revision import revision_of
from model_operator.rollout import MIN_REQUEUE_SECONDS, Observation, RevisionState, decide

REPO = Path(__file__).resolve().parents[1]
NAME = "fuzzed"
DEFAULT_IMAGE = "modelship/runtime:fuzz"
_CEL_PATTERN = re.compile(r"^self\.matches\('(.+)'\)$")
Path_ = tuple[str | int, ...]


def fuzz_settings(examples: int) -> settings:
    """Bounded runs: each example costs a kubectl call, so no shrinking; CI runs a fixed sample, other runs
    explore anew."""
    return settings(
        max_examples=examples,
        deadline=None,
        database=None,
        derandomize=bool(os.environ.get("CI")),
        phases=(Phase.explicit, Phase.generate),
        suppress_health_check=list(HealthCheck),
    )


def crd_spec_schema() -> dict[str, Any]:
    schema: dict[str, Any] = crdgen.crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    return schema


def generation_schema(node: dict[str, Any], *, shaped: bool) -> dict[str, Any]:
    """The CRD's structural schema as plain JSON Schema for hypothesis-jsonschema. `shaped` also gives
    strings the shape their CEL rules ask for (durations), so more specs get past the API server. Lists
    and maps are capped at 3 entries: smaller specs, the same rules."""
    if node.get("x-kubernetes-int-or-string"):
        return {"anyOf": [{"type": "integer"} | _bounds(node, "integer"), {"type": "string"} | _bounds(node, "string")]}
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key.startswith("x-kubernetes-") or key in ("description", "default"):
            continue
        if key == "properties":
            out[key] = {name: generation_schema(child, shaped=shaped) for name, child in value.items()}
        elif key in ("items", "additionalProperties") and isinstance(value, dict):
            out[key] = generation_schema(value, shaped=shaped)
        elif key in ("exclusiveMinimum", "exclusiveMaximum") and value is True:
            out[key] = node["minimum" if key == "exclusiveMinimum" else "maximum"]
        else:
            out[key] = value
    for bound in ("minimum", "maximum"):
        if node.get(f"exclusive{bound.title()}") is True:
            out.pop(bound, None)
    if node.get("type") == "array":
        out["maxItems"] = min(out.get("maxItems", 3), 3)
    if node.get("type") == "object" and "properties" not in node:
        out["maxProperties"] = 3
    if shaped and node.get("type") == "string":
        for rule in node.get("x-kubernetes-validations", []):
            if match := _CEL_PATTERN.match(rule["rule"]):
                out["pattern"] = match.group(1)
    return out


def _bounds(node: dict[str, Any], kind: str) -> dict[str, Any]:
    keys = ("minimum", "maximum") if kind == "integer" else ("pattern", "maxLength")
    return {k: node[k] for k in keys if k in node}


def schema_specs() -> st.SearchStrategy[dict[str, Any]]:
    schema = crd_spec_schema()
    return st.one_of(
        from_schema(generation_schema(schema, shaped=False)), from_schema(generation_schema(schema, shaped=True))
    )


def example_specs() -> list[dict[str, Any]]:
    """The specs users start from: the examples, and the smallest valid spec."""
    specs = [yaml.safe_load(path.read_text())["spec"] for path in sorted((REPO / "examples").glob("*.yaml"))]
    return [{"model": {"uri": "pvc://models/tiny"}}, *specs]


def schema_paths(node: dict[str, Any], prefix: Path_ = ()) -> list[tuple[Path_, dict[str, Any]]]:
    """Every field the schema names, lists entered at index 0."""
    found: list[tuple[Path_, dict[str, Any]]] = []
    for name, child in node.get("properties", {}).items():
        path = (*prefix, name)
        found.append((path, child))
        found += schema_paths(child, path)
    if isinstance(node.get("items"), dict):
        found += schema_paths(node["items"], (*prefix, 0))
    return found


EDGE_DURATIONS = [
    "0s",
    "1s",
    "1ms",
    "999.999999999ms",
    "0.0000000001s",
    "2562048h",
    "99999h99999h99999h99999h",
    "1h1h1h1h1h",
    "1.5h",
    "-1s",
    "1d",
    "1s ",
    " 1s",
    "1e3s",
    "1_000ms",
    "\uff11s",
]
EDGE_QUANTITIES = ["500m", "8Gi", "1e3", ".5", "-1", "lots", "8GiB", "1.5.5", "+1", "0x10", "\u0661"]
EDGE_URLS = [
    "http://p:9090",
    "http://p:9090\n",
    "http://",
    "http:///x",
    "https://a b",
    "ftp://p",
    "http://p/\u00a0",
    "http://u@p",
    "HTTP://p",
]
EDGE_NUMBERS: list[Any] = [
    0,
    -1,
    1,
    0.5,
    -0.0,
    1e-300,
    1e308,
    2**31,
    2**53 + 1,
    2**63 - 1,
    2**63,
    -(2**63) - 1,
    10**38,
    5.0,
    100,
    99,
    1000,
    1001,
]
WRONG_TYPES: list[Any] = [None, True, False, "5", "true", "", [], {}, [1], {"a": 1}]
UNICODE = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=12)


def hostile_value(node: dict[str, Any]) -> st.SearchStrategy[Any]:
    """Values to put where `node` is expected: near misses for its type first (the number as a string, a
    fraction, a boolean, one past a bound), then other types, edge strings and unicode."""
    kind = node.get("type")
    near: list[Any] = []
    if kind == "integer" or node.get("x-kubernetes-int-or-string"):
        bounds = [node[k] + d for k in ("minimum", "maximum") if k in node for d in (-1, 0, 1)]
        near += [*bounds, "5", 5.5, 5.0, True, 2**63, -(2**63) - 1, 1e20]
    if kind == "number":
        bounds = [node[k] * f for k in ("minimum", "maximum") if k in node for f in (0.999, 1, 1.001)]
        near += [*bounds, "0.5", True, 1, 10**30]
    if kind == "boolean":
        near += ["true", "false", 1, 0, "yes", None]
    if kind == "string":
        near += [5, True, 1.5, *node.get("enum", []), *EDGE_DURATIONS, *EDGE_URLS]
    if node.get("x-kubernetes-int-or-string"):
        near += EDGE_QUANTITIES
    if kind in ("object", "array"):
        near += ["", 0, [] if kind == "object" else {}, None]
    others = st.one_of(st.sampled_from([*WRONG_TYPES, *EDGE_NUMBERS]), UNICODE)
    return st.one_of(st.sampled_from(near), others) if near else others


@st.composite
def mutated_specs(draw: st.DrawFn) -> dict[str, Any]:
    """A real spec with one to three fields deleted, replaced by a hostile value, or added unknown."""
    spec: dict[str, Any] = copy.deepcopy(draw(st.sampled_from(example_specs())))
    paths = schema_paths(crd_spec_schema())
    for _ in range(draw(st.sampled_from([1, 1, 1, 2, 3]))):
        path, node = draw(st.sampled_from(paths))
        operation = draw(st.sampled_from(["set", "set", "set", "delete", "unknown"]))
        if operation == "delete":
            _delete(spec, path)
        elif operation == "unknown":
            _set(spec, (*path[:-1], draw(st.sampled_from(["bogus", "Replicas", "model_uri"]))), 1)
        else:
            _set(spec, path, draw(hostile_value(node)))
    return spec


def _set(spec: Any, path: Path_, value: Any) -> None:
    node = spec
    for part, following in zip(path, (*path[1:], None), strict=True):
        if following is None:
            break
        child_default: Any = [] if isinstance(following, int) else {}
        if isinstance(part, int):
            if not isinstance(node, list):
                return
            while len(node) <= part:
                node.append(child_default)
            if not isinstance(node[part], (dict, list)):
                node[part] = child_default
        else:
            if not isinstance(node, dict):
                return
            if not isinstance(node.get(part), (dict, list)):
                node[part] = child_default
        node = node[part]
    last = path[-1]
    if isinstance(last, int) and isinstance(node, list):
        node[last : last + 1] = [value]
    elif isinstance(node, dict):
        node[str(last)] = value


def _delete(spec: Any, path: Path_) -> None:
    node = spec
    for part in path[:-1]:
        try:
            node = node[part]
        except (KeyError, IndexError, TypeError):
            return
    if isinstance(node, dict):
        node.pop(str(path[-1]), None)
    elif isinstance(node, list) and isinstance(path[-1], int) and path[-1] < len(node):
        del node[path[-1]]


@dataclass(frozen=True)
class ApiVerdict:
    accepted: bool
    stored: dict[str, Any] | None  # the spec as stored (defaults filled, nulls pruned), when accepted
    message: str


def api_server_verdict(kubectl: Kubectl, namespace: str, spec: dict[str, Any]) -> ApiVerdict:
    manifest = {
        "apiVersion": "modelship.io/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": NAME, "namespace": namespace},
        "spec": spec,
    }
    result = kubectl("apply", "--dry-run=server", "-o", "json", "-f", "-", stdin=json.dumps(manifest), check=False)
    if result.returncode != 0:
        return ApiVerdict(False, None, result.stderr.strip())
    stored: dict[str, Any] = json.loads(result.stdout)["spec"]
    return ApiVerdict(True, stored, "")


def operator_problems(spec: Any) -> list[str]:
    """The operator's complaints about a spec; empty when it accepts it."""
    try:
        parse_spec(spec)
    except InvalidSpecError as error:
        return error.problems
    return []


def only_operator_rules(problems: list[str]) -> bool:
    return bool(problems) and all(any(rule in problem for rule in OPERATOR_ONLY_RULES) for problem in problems)


def canary_requeues(spec: ModelDeploymentSpec, looks: int = 8) -> list[float]:
    """Run a canary of `spec` against a ready stable through `decide`, following each requeue, with the
    analysis undecided, blind and passing in turn; the requeues the operator asked for."""
    now = datetime(2026, 1, 1, tzinfo=UTC)
    status, requeues = ModelDeploymentStatus(), []
    canary = revision_of(spec, DEFAULT_IMAGE)
    replicas = spec.runtime.replicas
    outcomes = [
        Outcome(Verdict.INCONCLUSIVE, "need requests", ()),
        Outcome(Verdict.NO_DATA, "blind", ()),
        Outcome(Verdict.PASS, "pass", ()),
    ]
    for look in range(looks):
        desired = "stable00" if look < 2 else canary
        ready = {"stable00": replicas} | ({canary: replicas} if look >= 3 else {})
        observation = Observation(
            generation=1 if look < 2 else 2,
            spec=spec,
            spec_problems=(),
            desired_revision=desired,
            action=None,
            revisions={rev: RevisionState(replicas=replicas, ready=count) for rev, count in ready.items()},
            analysis=outcomes[look % len(outcomes)] if look >= 3 else None,
            now=now,
        )
        decision = decide(status, observation)
        status = decision.status
        requeues.append(decision.requeue_after)
        assert math.isfinite(decision.requeue_after), decision
        now += timedelta(seconds=max(decision.requeue_after, MIN_REQUEUE_SECONDS))
    return requeues
