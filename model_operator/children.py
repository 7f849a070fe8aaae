"""The whole desired set of child objects for a decision, and the revision records they are built from.

A revision's pods are built from that revision's own model and runtime settings, kept in a
ControllerRevision (as StatefulSets and DaemonSets keep theirs): re-rendering the stable Deployment from
a newer spec would restart stable with the canary's model.
"""

from __future__ import annotations

from dataclasses import dataclass
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
        "data": revision_inputs(spec, settings.server_image(spec.runtime.server)),
    }


def spec_for(current: ModelDeploymentSpec, record: dict[str, Any] | None) -> ModelDeploymentSpec:
    """The spec a revision's pods are built from: its recorded model and runtime, today's replicas."""
    if record is None:
        return current
    runtime = Runtime.model_validate({**record["runtime"], "replicas": current.runtime.replicas})
    return current.model_copy(update={"model": ModelSource.model_validate(record["model"]), "runtime": runtime})


@dataclass(frozen=True)
class Children:
    """What one decision wants to exist, in two stages: every revision's pods and Service, then the routing
    that sends traffic to them. Objects within a stage do not depend on each other and can be applied at
    once; routing waits for the whole first stage, so it never names a backend that is not applied yet."""

    backends: list[dict[str, Any]]
    routing: list[dict[str, Any]]
    missing: list[str]  # revisions that cannot be built because their record is missing

    @property
    def objects(self) -> list[dict[str, Any]]:
        return [*self.backends, *self.routing]


def desired_children(
    name: str,
    namespace: str,
    spec: ModelDeploymentSpec,
    desired_revision: str,
    records: dict[str, dict[str, Any]],
    decision: Decision,
    settings: OperatorSettings,
) -> Children:
    backends: list[dict[str, Any]] = []
    missing = []
    traffic = traffic_for(spec)
    for revision, replicas in sorted(decision.plan.items()):
        record = records.get(revision)
        if record is None and revision != desired_revision:
            missing.append(revision)
            continue
        backends.append(revision_deployment(name, spec_for(spec, record), revision, replicas, settings))
        backends.append(revision_service(name, revision))
        backends += traffic.revision_objects(name, spec, revision, settings)
    routing = (
        traffic.objects(name, namespace, spec, settings, decision.stable, decision.canary, decision.weight)
        if decision.stable
        else []
    )
    return Children(backends, routing, missing)


def object_key(obj: dict[str, Any]) -> tuple[str, str, str]:
    return obj["apiVersion"], obj["kind"], obj["metadata"]["name"]
