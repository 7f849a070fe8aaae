"""The whole desired set of child objects for a decision, and the revision records they are built from.

A revision's pods are built from that revision's own model and runtime settings, kept in a
ControllerRevision (as StatefulSets and DaemonSets keep theirs): re-rendering the stable Deployment from
a newer spec would restart stable with the canary's model.
"""

from __future__ import annotations

from typing import Any

from .api.spec import ModelDeploymentSpec, ModelSource, Runtime
from .manifests import revision_deployment, revision_service
from .naming import LABEL_REVISION, common_labels, revision_name
from .revision import revision_inputs
from .rollout import Decision
from .settings import OperatorSettings
from .traffic import traffic_for

RECORD_COMPONENT = "revision-record"


def revision_record(
    name: str, spec: ModelDeploymentSpec, revision: str, number: int, settings: OperatorSettings
) -> dict[str, Any]:
    """A ControllerRevision holding what the revision hash covers."""
    return {
        "apiVersion": "apps/v1",
        "kind": "ControllerRevision",
        "metadata": {
            "name": revision_name(name, revision),
            "labels": common_labels(name, RECORD_COMPONENT) | {LABEL_REVISION: revision},
        },
        "revision": number,
        "data": revision_inputs(spec, settings.runtime_image),
    }


def spec_for(current: ModelDeploymentSpec, record: dict[str, Any] | None) -> ModelDeploymentSpec:
    """The spec a revision's pods are built from: its recorded model and runtime, today's replicas."""
    if record is None:
        return current
    runtime = Runtime.model_validate({**record["runtime"], "replicas": current.runtime.replicas})
    return current.model_copy(update={"model": ModelSource.model_validate(record["model"]), "runtime": runtime})


def desired_children(
    name: str,
    namespace: str,
    spec: ModelDeploymentSpec,
    desired_revision: str,
    records: dict[str, dict[str, Any]],
    decision: Decision,
    settings: OperatorSettings,
) -> tuple[list[dict[str, Any]], list[str]]:
    """(objects to apply, revisions that cannot be built because their record is missing)."""
    objects: list[dict[str, Any]] = []
    missing = []
    for revision, replicas in sorted(decision.plan.items()):
        record = records.get(revision)
        if record is None and revision != desired_revision:
            missing.append(revision)
            continue
        objects.append(revision_deployment(name, spec_for(spec, record), revision, replicas, settings))
        objects.append(revision_service(name, revision))
    if decision.stable:
        objects += traffic_for(spec).objects(
            name, namespace, spec, settings, decision.stable, decision.canary, decision.weight
        )
    return objects, missing


def object_key(obj: dict[str, Any]) -> tuple[str, str, str]:
    return obj["apiVersion"], obj["kind"], obj["metadata"]["name"]
