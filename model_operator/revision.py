"""A revision is a short hash of everything that changes the pods: the model and the runtime.

Traffic and rollout settings are left out, so tuning a rollout never starts one. `runtime.replicas` is left
out too: scaling is not a new version, as with a Deployment's pod-template hash.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from .api import ModelDeploymentSpec

REVISION_LENGTH = 8
_NOT_HASHED_RUNTIME_FIELDS = frozenset({"replicas"})
# Fields added after revisions were first hashed: left out while at their defaults, so an upgraded operator
# computes the same revision for an unchanged spec and starts no rollout.
_HASHED_UNLESS_DEFAULT: dict[str, Any] = {"server": "modelship", "args": [], "custom": None}


def revision_inputs(spec: ModelDeploymentSpec, default_image: str) -> dict[str, Any]:
    """What a revision hash covers, defaults filled in, so spelling a default out changes nothing;
    `default_image` is the operator's image for the spec's server (OperatorSettings.server_image)."""
    runtime = spec.runtime.model_dump(by_alias=False, mode="json", exclude=set(_NOT_HASHED_RUNTIME_FIELDS))
    runtime["image"] = spec.runtime.image or default_image
    for field, default in _HASHED_UNLESS_DEFAULT.items():
        if runtime.get(field) == default:
            del runtime[field]
    return {"model": spec.model.model_dump(by_alias=False, mode="json"), "runtime": runtime}


def revision_of(spec: ModelDeploymentSpec, default_image: str) -> str:
    """The revision hash: stable across runs, processes and machines (canonical JSON, sha256)."""
    canonical = json.dumps(
        revision_inputs(spec, default_image), sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False
    )
    return hashlib.sha256(canonical.encode()).hexdigest()[:REVISION_LENGTH]
