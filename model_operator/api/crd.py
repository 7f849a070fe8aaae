"""Generate the ModelDeployment CRD from the pydantic models.

Pydantic emits JSON Schema (draft 2020-12); the API server wants a structural OpenAPI v3 schema. This
module bridges the two: references are inlined, optional unions collapse to their one real type,
`int | str` becomes `x-kubernetes-int-or-string`, open maps keep unknown fields, numeric exclusive bounds
take the draft-4 form, and objects whose fields all have defaults default to `{}` so the API server
fills in the leaves.

    python -m model_operator.api.crd            # rewrite crds/ and the chart's copy
    python -m model_operator.api.crd --check    # exit 1 when the committed YAML differs
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import yaml

from .base import cel
from .resource import (
    CATEGORIES,
    GROUP,
    KIND,
    MAX_NAME_LENGTH,
    PLURAL,
    SHORT_NAMES,
    SINGULAR,
    VERSION,
    ModelDeployment,
)
from .spec import ModelDeploymentSpec
from .status import ModelDeploymentStatus

REPO_ROOT = Path(__file__).resolve().parents[2]
CRD_PATHS = (
    REPO_ROOT / "crds" / "modeldeployment.yaml",
    REPO_ROOT / "charts" / "modelship" / "crds" / "modeldeployment.yaml",
)
_DROPPED_KEYS = {"title", "$defs"}
NAME_RULES = [
    cel(
        f"size(self.metadata.name) <= {MAX_NAME_LENGTH}",
        f"metadata.name must be at most {MAX_NAME_LENGTH} characters (revision names append 9)",
    ),
    cel(
        "self.metadata.name.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$')",
        "metadata.name must be a DNS label: lower-case letters, digits and '-', starting with a letter",
    ),
]


def _resolve(node: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    """Inline a `$ref` (or a lone `allOf` wrapper), keeping the referring node's own keys on top."""
    if "allOf" in node and len(node["allOf"]) == 1:
        inner = _resolve(node["allOf"][0], defs)
        rest = {k: v for k, v in node.items() if k != "allOf"}
        return _merge(inner, rest)
    if "$ref" in node:
        target = defs[node["$ref"].rsplit("/", 1)[-1]]
        rest = {k: v for k, v in node.items() if k != "$ref"}
        return _merge(_resolve(target, defs), rest)
    return node


def _merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in top.items():
        if key == "x-kubernetes-validations":
            merged[key] = [*merged.get(key, []), *value]
        else:
            merged[key] = value
    return merged


def _collapse_union(node: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    options = [_resolve(o, defs) for o in node["anyOf"] if o != {"type": "null"}]
    rest = {k: v for k, v in node.items() if k != "anyOf"}
    if len(options) == 1:
        return _merge(options[0], rest)
    types = {o.get("type") for o in options}
    if types == {"integer", "string"}:
        # Like controller-gen's resource.Quantity: the members' own bounds move to the node, where the API
        # server applies numeric ones to integers and `pattern` to strings.
        bounds = {k: v for o in options for k, v in o.items() if k != "type"}
        int_or_string = {"x-kubernetes-int-or-string": True, "anyOf": [{"type": "integer"}, {"type": "string"}]}
        return _merge(int_or_string | bounds, rest)
    raise ValueError(f"no structural form for the union {node['anyOf']}")


def structural(node: dict[str, Any], defs: dict[str, Any], *, in_status: bool = False) -> dict[str, Any]:
    """One pydantic schema node as a structural OpenAPI v3 node."""
    node = _resolve(node, defs)
    if "anyOf" in node and not node.get("x-kubernetes-int-or-string"):
        node = _collapse_union(node, defs)
    out: dict[str, Any] = {k: v for k, v in node.items() if k not in _DROPPED_KEYS}
    if "description" in out:
        out["description"] = _one_paragraph(out["description"])
    if "default" in out and out["default"] is None:
        del out["default"]  # optional fields stay absent rather than null
    if "const" in out:
        out["enum"] = [out.pop("const")]
    if isinstance(out.get("exclusiveMinimum"), (int, float)) and not isinstance(out["exclusiveMinimum"], bool):
        out["minimum"], out["exclusiveMinimum"] = out["exclusiveMinimum"], True
    if isinstance(out.get("exclusiveMaximum"), (int, float)) and not isinstance(out["exclusiveMaximum"], bool):
        out["maximum"], out["exclusiveMaximum"] = out["exclusiveMaximum"], True
    kind = out.get("type")
    if kind == "object":
        properties = out.get("properties")
        extra = out.get("additionalProperties")
        if properties:
            out["properties"] = {
                name: structural(child, defs, in_status=in_status) for name, child in properties.items()
            }
            out.pop("additionalProperties", None)
            if not in_status:
                for name, child in out["properties"].items():
                    # An optional section whose model default is None (rollout.validation: off unless
                    # asked for) stays absent: defaulted to {}, its own rules would refuse every spec.
                    off_by_default = "default" in properties[name] and properties[name]["default"] is None
                    if _all_optional_object(child) and name not in out.get("required", []) and not off_by_default:
                        child.setdefault("default", {})
        elif isinstance(extra, dict) and extra:
            out["additionalProperties"] = structural(extra, defs, in_status=in_status)
        else:
            out.pop("additionalProperties", None)
            out["x-kubernetes-preserve-unknown-fields"] = True
    elif kind == "array":
        out["items"] = structural(out["items"], defs, in_status=in_status)
    elif kind is None and not out.get("x-kubernetes-int-or-string"):
        raise ValueError(f"schema node without a type: {node}")
    return _ordered(out)


def _one_paragraph(text: str) -> str:
    return " ".join(text.split())


_LEADING_KEYS = ("type", "description")


def _ordered(node: dict[str, Any]) -> dict[str, Any]:
    """Type and description first, then the rest alphabetically, so the YAML reads top-down."""
    head = {k: node[k] for k in _LEADING_KEYS if k in node}
    return head | {k: node[k] for k in sorted(node) if k not in head}


def _all_optional_object(node: dict[str, Any]) -> bool:
    return node.get("type") == "object" and bool(node.get("properties")) and not node.get("required")


def _model_schema(model: type[Any], *, in_status: bool) -> dict[str, Any]:
    raw = model.model_json_schema(by_alias=True, mode="validation" if not in_status else "serialization")
    defs = raw.pop("$defs", {})
    return structural(raw, defs, in_status=in_status)


def open_api_schema() -> dict[str, Any]:
    spec = _model_schema(ModelDeploymentSpec, in_status=False)
    status = _model_schema(ModelDeploymentStatus, in_status=True)
    status.pop("required", None)
    return {
        "type": "object",
        "description": " ".join((ModelDeployment.__doc__ or "").split()),
        "required": ["spec"],
        "properties": {
            "apiVersion": {"type": "string", "description": "The API version: modelship.io/v1alpha1."},
            "kind": {"type": "string", "description": "ModelDeployment."},
            "metadata": {"type": "object"},
            "spec": spec,
            "status": status,
        },
        "x-kubernetes-validations": NAME_RULES,
    }


def crd() -> dict[str, Any]:
    """The whole CustomResourceDefinition."""
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{PLURAL}.{GROUP}",
            "labels": {"app.kubernetes.io/name": "modelship", "app.kubernetes.io/part-of": "modelship"},
        },
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": KIND,
                "listKind": f"{KIND}List",
                "plural": PLURAL,
                "singular": SINGULAR,
                "shortNames": SHORT_NAMES,
                "categories": CATEGORIES,
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": [
                        {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
                        {"name": "Stable", "type": "string", "jsonPath": ".status.stableRevision"},
                        {"name": "Canary", "type": "string", "jsonPath": ".status.canaryRevision"},
                        {"name": "Weight", "type": "integer", "jsonPath": ".status.canaryWeight"},
                        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
                    ],
                    "schema": {"openAPIV3Schema": open_api_schema()},
                }
            ],
        },
    }


HEADER = "# Generated by `python -m model_operator.api.crd` from model_operator/api; do not edit.\n"


def render() -> str:
    return HEADER + yaml.safe_dump(crd(), sort_keys=False, width=100, allow_unicode=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--check", action="store_true", help="fail when a committed copy is stale")
    args = parser.parse_args(argv)
    text = render()
    stale = [path for path in CRD_PATHS if not path.exists() or path.read_text() != text]
    if args.check:
        for path in stale:
            print(f"{path.relative_to(REPO_ROOT)} is stale: run `python -m model_operator.api.crd`", file=sys.stderr)
        return 1 if stale else 0
    for path in stale:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        print(f"wrote {path.relative_to(REPO_ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
