"""How traffic is split between stable and canary, behind one small interface (as Argo Rollouts' traffic
routers are). Each mode says how many pods each track runs for a weight, and which objects carry the
split. Everything here is pure; the handler applies what it returns.

Replica arithmetic of the `replicas` mode, worked through (N = spec.runtime.replicas). The larger track
keeps N pods and the smaller one is sized to the weight, so stable never loses capacity while the canary
is small, and a rollback is only a scale-down of the canary:

    weight <= 50:  stable = N,  canary = max(1, round(N * w / (100 - w)))
    weight >  50:  canary = N,  stable = max(1, round(N * (100 - w) / w))
    N=4,  w=10 -> stable 4, canary 1 (20% of pods: one pod is the smallest canary)
    N=4,  w=25 -> stable 4, canary 1 (20%)
    N=4,  w=50 -> stable 4, canary 4 (50%)
    N=10, w=25 -> stable 10, canary 3 (23%)
    N=4,  w=75 -> stable 1, canary 4 (80%)
    N=1,  w=10 -> stable 1, canary 1 (50%: one pod cannot be split)
"""

from __future__ import annotations

from typing import Any, Protocol

from .api.spec import ModelDeploymentSpec
from .manifests import (
    endpoint_picker_objects,
    http_route,
    inference_pool,
    replicas_service,
    router_objects,
    routing_config,
)
from .settings import OperatorSettings


class TrafficRouter(Protocol):
    def replicas(self, total: int, weight: int) -> tuple[int, int]:
        """(stable, canary) pod counts while the canary has `weight` percent."""
        ...

    def objects(
        self,
        name: str,
        namespace: str,
        spec: ModelDeploymentSpec,
        settings: OperatorSettings,
        stable: str,
        canary: str | None,
        weight: int,
    ) -> list[dict[str, Any]]:
        """The objects that route requests with this split (besides the per-revision ones)."""
        ...

    def revision_objects(
        self, name: str, spec: ModelDeploymentSpec, revision: str, settings: OperatorSettings
    ) -> list[dict[str, Any]]:
        """What this mode adds beside each revision's Deployment and Service (applied with them)."""
        ...

    def keeps_idle_pods(self) -> bool:
        """Whether a revision at weight 0 (a rolled-back canary, a replaced stable) can keep running without
        taking traffic; not when one Service selects every revision's pods."""
        ...


class NothingPerRevision:
    def revision_objects(
        self, name: str, spec: ModelDeploymentSpec, revision: str, settings: OperatorSettings
    ) -> list[dict[str, Any]]:
        return []


class FullSizeTracks:
    """Modes that split requests, not pods: both tracks run at full size, and a revision at weight 0
    takes no traffic, so it can stay up."""

    def replicas(self, total: int, weight: int) -> tuple[int, int]:
        return total, total

    def keeps_idle_pods(self) -> bool:
        return True


class RouterTraffic(FullSizeTracks, NothingPerRevision):
    """The ModelShip router splits by weight and mirrors."""

    def objects(
        self,
        name: str,
        namespace: str,
        spec: ModelDeploymentSpec,
        settings: OperatorSettings,
        stable: str,
        canary: str | None,
        weight: int,
    ) -> list[dict[str, Any]]:
        return router_objects(name, spec, settings, routing_config(spec, stable, canary, weight))


class GatewayTraffic(FullSizeTracks):
    """An HTTPRoute with weighted backendRefs to the per-revision Services, or to per-revision
    InferencePools (each with its own endpoint picker, when one is configured)."""

    def revision_objects(
        self, name: str, spec: ModelDeploymentSpec, revision: str, settings: OperatorSettings
    ) -> list[dict[str, Any]]:
        pools = spec.traffic.gateway.inference_pool if spec.traffic.gateway else None
        if pools is None:
            return []
        objects = [inference_pool(name, revision, pools)]
        if pools.endpoint_picker is not None:
            objects += endpoint_picker_objects(name, revision, pools.endpoint_picker, settings)
        return objects

    def objects(
        self,
        name: str,
        namespace: str,
        spec: ModelDeploymentSpec,
        settings: OperatorSettings,
        stable: str,
        canary: str | None,
        weight: int,
    ) -> list[dict[str, Any]]:
        return [http_route(name, namespace, spec, stable, canary, weight)]


class ReplicaTraffic(NothingPerRevision):
    """One Service over both revisions; the weight is approximated by pod counts."""

    def replicas(self, total: int, weight: int) -> tuple[int, int]:
        if weight <= 0:
            return total, 0
        if weight >= 100:
            return 0, total
        if weight <= 50:
            return total, max(1, round(total * weight / (100 - weight)))
        return max(1, round(total * (100 - weight) / weight)), total

    def objects(
        self,
        name: str,
        namespace: str,
        spec: ModelDeploymentSpec,
        settings: OperatorSettings,
        stable: str,
        canary: str | None,
        weight: int,
    ) -> list[dict[str, Any]]:
        return [replicas_service(name)]

    def keeps_idle_pods(self) -> bool:
        return False


MODES: dict[str, TrafficRouter] = {
    "router": RouterTraffic(),
    "gatewayAPI": GatewayTraffic(),
    "replicas": ReplicaTraffic(),
}


def traffic_for(spec: ModelDeploymentSpec) -> TrafficRouter:
    return MODES[spec.traffic.mode]
