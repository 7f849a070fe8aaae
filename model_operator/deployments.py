"""Every ModelDeployment's model Deployments as the Deployment watch last showed them, so a reconcile
reads its revisions' replicas without listing Deployments (at fleet size those lists were a large share of
the API server's load).

A watch that has not delivered its first listing yet cannot say "none", so each loop lists once before
it trusts the view, and again every resync. A listing is merged, not copied: what a watch event changed
while the listing was on its way is newer than the listing, and stays."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .naming import COMPONENT_MODEL, LABEL_COMPONENT, LABEL_REVISION

Owner = tuple[str, str]  # namespace, ModelDeployment


@dataclass(frozen=True)
class ModelPods:
    """What a reconcile needs of one revision's Deployment: the replicas it asks for and how many are ready."""

    revision: str
    replicas: int
    ready: int

    @property
    def short_of_ready(self) -> bool:
        """Only then is it worth listing its pods to learn why (podhealth.pod_failures)."""
        return self.ready < self.replicas


def model_pods(deployment: Mapping[str, Any]) -> ModelPods | None:
    """The revision a model Deployment runs, or None for any other Deployment (the router's)."""
    labels = (deployment.get("metadata") or {}).get("labels") or {}
    revision = labels.get(LABEL_REVISION)
    if labels.get(LABEL_COMPONENT) != COMPONENT_MODEL or not revision:
        return None
    replicas = (deployment.get("spec") or {}).get("replicas")
    ready = (deployment.get("status") or {}).get("readyReplicas")
    return ModelPods(str(revision), int(replicas or 0), int(ready or 0))


class DeploymentView:
    def __init__(self) -> None:
        self._pods: dict[Owner, dict[str, ModelPods]] = {}
        self._changed: dict[Owner, dict[str, int]] = {}  # when an event last touched each Deployment
        self._events = 0  # events recorded so far: the view's clock

    def mark(self) -> int:
        """Taken before a listing starts; `merge` keeps what events changed after it."""
        return self._events

    def record(self, owner: Owner, kind: str | None, deployment: Mapping[str, Any]) -> None:
        name = str((deployment.get("metadata") or {}).get("name"))
        self._events += 1
        self._changed.setdefault(owner, {})[name] = self._events
        found = model_pods(deployment)
        pods = self._pods.setdefault(owner, {})
        if kind == "DELETED" or found is None:
            pods.pop(name, None)
        else:
            pods[name] = found

    def merge(self, owner: Owner, listed: Mapping[str, Mapping[str, Any]], since: int) -> None:
        """Take a listing (name -> Deployment) that started at `since`."""
        pods = self._pods.setdefault(owner, {})
        changed = self._changed.get(owner, {})
        for name in set(pods) | set(listed):
            if changed.get(name, 0) > since:
                continue  # an event after the listing started is at least as new
            found = model_pods(listed[name]) if name in listed else None
            if found is None:
                pods.pop(name, None)
            else:
                pods[name] = found

    def revisions(self, owner: Owner) -> dict[str, ModelPods]:
        return {pods.revision: pods for pods in self._pods.get(owner, {}).values()}

    def forget(self, owner: Owner) -> None:
        self._pods.pop(owner, None)
        self._changed.pop(owner, None)
