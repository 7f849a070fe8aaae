"""The Kubernetes adapter: read children, apply and prune objects, write status, post events. Blocking
calls (the kubernetes client is synchronous); the handler runs them in threads. It decides nothing."""

from __future__ import annotations

import datetime
import logging
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException
from kubernetes.dynamic import DynamicClient
from kubernetes.dynamic.exceptions import NotFoundError, ResourceNotFoundError

from .api.resource import API_VERSION, GROUP, KIND, PLURAL, VERSION
from .children import RECORD_COMPONENT
from .naming import (
    ACTION_ANNOTATION,
    COMPONENT_MODEL,
    LABEL_COMPONENT,
    LABEL_MODEL_DEPLOYMENT,
    LABEL_REVISION,
)
from .podhealth import pod_failures
from .rollout import Event

log = logging.getLogger("model_operator.kube")
FIELD_MANAGER = "modelship"
MISSING_API_RECHECK_SECONDS = 30.0
# What the operator creates and may therefore prune (only objects it owns).
PRUNABLE = [
    ("apps/v1", "Deployment"),
    ("v1", "Service"),
    ("v1", "ConfigMap"),
    ("v1", "ServiceAccount"),
    ("rbac.authorization.k8s.io/v1", "Role"),
    ("rbac.authorization.k8s.io/v1", "RoleBinding"),
    ("gateway.networking.k8s.io/v1", "HTTPRoute"),
    ("inference.networking.k8s.io/v1", "InferencePool"),
    ("apps/v1", "ControllerRevision"),
]


class ApplyError(RuntimeError):
    """An object could not be applied; the message names it and says why."""


class NotLeading(RuntimeError):
    """A write was refused because this replica does not (or no longer) hold the Lease."""


class Kube:
    """`may_write` is the leader-election fence: every write checks it first, in the thread that makes
    the call, so a replica whose lease ran out stops writing even if its event loop is stuck."""

    def __init__(self, api_client: client.ApiClient, may_write: Callable[[], bool] = lambda: True) -> None:
        self.api_client = api_client
        self.may_write = may_write
        self.core = client.CoreV1Api(api_client)
        self.apps = client.AppsV1Api(api_client)
        self.custom = client.CustomObjectsApi(api_client)
        self.dynamic = DynamicClient(api_client)  # type: ignore[no-untyped-call]
        self._found: dict[tuple[str, str], Any] = {}
        self._missing: dict[tuple[str, str], float] = {}
        self._discovery = threading.Lock()

    def _resource(self, api_version: str, kind: str) -> Any:
        """The API resource for a kind. Discovery is not thread-safe in the client (a miss rebuilds its cache
        while other threads read it), so lookups are serialised and remembered; a missing API is looked up
        again after MISSING_API_RECHECK_SECONDS, in case its CRD has been installed since."""
        key = (api_version, kind)
        with self._discovery:
            if key in self._found:
                return self._found[key]
            if time.monotonic() < self._missing.get(key, 0.0):
                raise ResourceNotFoundError(f"no {api_version} {kind} API")
            try:
                resource = self.dynamic.resources.get(api_version=api_version, kind=kind)
            except ResourceNotFoundError:
                self._missing[key] = time.monotonic() + MISSING_API_RECHECK_SECONDS
                raise
            self._found[key] = resource
            return resource

    # ---- reading ----------------------------------------------------------------------------------
    def model_deployments(self, namespace: str, name: str) -> dict[str, dict[str, Any]]:
        """name -> the Deployment, for each revision's model Deployment of this ModelDeployment."""
        selector = f"{LABEL_MODEL_DEPLOYMENT}={name},{LABEL_COMPONENT}={COMPONENT_MODEL}"
        listing = self.apps.list_namespaced_deployment(namespace, label_selector=selector).items
        found = [self.api_client.sanitize_for_serialization(item) for item in listing]  # type: ignore[no-untyped-call]
        return {str(item["metadata"]["name"]): item for item in found}

    def pod_failures(self, namespace: str, name: str, revision: str) -> tuple[str, ...]:
        """Why a revision's pods cannot start, from a listing of them (podhealth.pod_failures)."""
        selector = f"{LABEL_MODEL_DEPLOYMENT}={name},{LABEL_COMPONENT}={COMPONENT_MODEL},{LABEL_REVISION}={revision}"
        pods = self.core.list_namespaced_pod(namespace, label_selector=selector).items
        return pod_failures([self.api_client.sanitize_for_serialization(pod) for pod in pods])  # type: ignore[no-untyped-call]

    def revision_records(self, namespace: str, name: str) -> tuple[dict[str, dict[str, Any]], int]:
        """(revision -> recorded model and runtime, the highest record number so far)."""
        selector = f"{LABEL_MODEL_DEPLOYMENT}={name},{LABEL_COMPONENT}={RECORD_COMPONENT}"
        records, highest = {}, 0
        for item in self.apps.list_namespaced_controller_revision(namespace, label_selector=selector).items:
            revision = ((item.metadata.labels if item.metadata else None) or {}).get(LABEL_REVISION)
            highest = max(highest, int(item.revision or 0))
            if revision and isinstance(item.data, dict):
                records[revision] = item.data
        return records, highest

    def owned(self, namespace: str, name: str, owner_uid: str) -> list[tuple[str, str, str]]:
        """(apiVersion, kind, name) of every prunable object this ModelDeployment owns."""
        found = []
        for api_version, kind in PRUNABLE:
            try:
                resource = self._resource(api_version, kind)
            except ResourceNotFoundError:
                continue  # e.g. no Gateway API installed: nothing of that kind can exist
            listing = resource.get(namespace=namespace, label_selector=f"{LABEL_MODEL_DEPLOYMENT}={name}")
            for item in listing.items:
                owners = item.metadata.get("ownerReferences") or []
                if any(o.get("uid") == owner_uid for o in owners):
                    found.append((api_version, kind, item.metadata.name))
        return found

    def service_url(self, namespace: str, service: str) -> str | None:
        """http://CLUSTER-IP:PORT of a Service's first port; None when the Service does not exist (yet)."""
        try:
            found = self.core.read_namespaced_service(service, namespace)
        except ApiException as error:
            if error.status == 404:
                return None
            raise
        if found.spec is None:
            return None
        ip, ports = found.spec.cluster_ip, found.spec.ports or []
        if not ip or ip == "None" or not ports:
            return None
        host = f"[{ip}]" if ":" in ip else ip
        return f"http://{host}:{ports[0].port}"

    def config_map_value(self, namespace: str, name: str, key: str) -> str:
        """One key of a ConfigMap; raises LookupError saying what is missing."""
        try:
            found = self.core.read_namespaced_config_map(name, namespace)
        except ApiException as error:
            if error.status == 404:
                raise LookupError(f"ConfigMap {namespace}/{name} not found") from None
            raise
        data = found.data or {}
        if key not in data:
            raise LookupError(
                f"ConfigMap {namespace}/{name} has no key {key!r} (it has: {', '.join(sorted(data)) or 'none'})"
            )
        return str(data[key])

    # ---- writing ----------------------------------------------------------------------------------
    def _fence(self) -> None:
        if not self.may_write():
            raise NotLeading("this replica does not hold the lease: not writing")

    def apply(self, obj: dict[str, Any], namespace: str) -> int:
        """Server-side apply; returns the object's metadata.generation as stored (0 for kinds without one)."""
        self._fence()
        api_version, kind, name = obj["apiVersion"], obj["kind"], obj["metadata"]["name"]
        try:
            stored = self._resource(api_version, kind).server_side_apply(
                body=obj, name=name, namespace=namespace, field_manager=FIELD_MANAGER, force_conflicts=True
            )
        except ResourceNotFoundError:
            raise ApplyError(
                f"cannot create {kind} {name}: the cluster has no {api_version} {kind} API (is the CRD installed?)"
            ) from None
        except ApiException as error:
            raise ApplyError(
                f"cannot apply {kind} {name}: {error.status} {error.reason}: {_api_message(error)}"
            ) from None
        metadata = getattr(stored, "metadata", None)
        return int(getattr(metadata, "generation", None) or 0)

    def delete(self, namespace: str, api_version: str, kind: str, name: str) -> None:
        self._fence()
        try:
            self._resource(api_version, kind).delete(
                name=name, namespace=namespace, body={"propagationPolicy": "Background"}
            )
        except (NotFoundError, ResourceNotFoundError):
            return

    def write_status(self, namespace: str, name: str, status: dict[str, Any]) -> dict[str, Any]:
        """Replace the whole status (a JSON patch, so fields the new status drops really go); returns the
        object as stored."""
        self._fence()
        result = self.custom.patch_namespaced_custom_object_status(
            GROUP,
            VERSION,
            namespace,
            PLURAL,
            name,
            [{"op": "add", "path": "/status", "value": status}],
            _content_type="application/json-patch+json",
        )
        return dict(result)  # type: ignore[call-overload,no-any-return]

    def clear_action(self, namespace: str, name: str) -> dict[str, Any]:
        self._fence()
        escaped = ACTION_ANNOTATION.replace("~", "~0").replace("/", "~1")
        result = self.custom.patch_namespaced_custom_object(
            GROUP,
            VERSION,
            namespace,
            PLURAL,
            name,
            [{"op": "remove", "path": f"/metadata/annotations/{escaped}"}],
            _content_type="application/json-patch+json",
        )
        return dict(result)  # type: ignore[call-overload,no-any-return]

    def post_event(self, namespace: str, name: str, uid: str, event: Event) -> None:
        self._fence()
        now = datetime.datetime.now(datetime.UTC)
        body = client.CoreV1Event(
            metadata=client.V1ObjectMeta(name=f"{name}.{uuid.uuid4().hex[:12]}", namespace=namespace),
            involved_object=client.V1ObjectReference(
                api_version=API_VERSION, kind=KIND, name=name, namespace=namespace, uid=uid
            ),
            reason=event.reason,
            message=event.message[:1000],
            type=event.kind,
            count=1,
            first_timestamp=now,
            last_timestamp=now,
            source=client.V1EventSource(component="modelship-operator"),
            reporting_component="modelship.io/operator",
            reporting_instance="modelship-operator",
        )
        try:
            self.core.create_namespaced_event(namespace, body)
        except ApiException as error:
            log.warning("could not post event %s on %s/%s: %s", event.reason, namespace, name, error.reason)


def _api_message(error: ApiException) -> str:
    import json

    try:
        return str(json.loads(error.body or "{}").get("message", ""))[:500]
    except ValueError:
        return str(error.body)[:500]
