"""The Lease adapter of leader election: read and write one coordination.k8s.io/v1 Lease. Blocking calls;
it decides nothing."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from .leadership import LeaseConflict, LeaseRecord

REQUEST_TIMEOUT_SECONDS = 5.0


def _micro_time(value: datetime | None) -> str | None:
    """RFC 3339 with microseconds, the Lease's MicroTime format."""
    return None if value is None else value.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _parse_time(value: str | None) -> datetime | None:
    return None if not value else datetime.fromisoformat(value.replace("Z", "+00:00"))


def record_of(lease: dict[str, Any]) -> LeaseRecord:
    spec = lease.get("spec") or {}
    return LeaseRecord(
        holder=spec.get("holderIdentity") or "",
        duration_seconds=int(spec.get("leaseDurationSeconds") or 0),
        acquire_time=_parse_time(spec.get("acquireTime")),
        renew_time=_parse_time(spec.get("renewTime")),
        transitions=int(spec.get("leaseTransitions") or 0),
        resource_version=(lease.get("metadata") or {}).get("resourceVersion"),
    )


def lease_body(name: str, namespace: str, record: LeaseRecord) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name, "namespace": namespace}
    if record.resource_version is not None:
        metadata["resourceVersion"] = record.resource_version
    return {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": metadata,
        "spec": {
            "holderIdentity": record.holder,
            "leaseDurationSeconds": record.duration_seconds,
            "acquireTime": _micro_time(record.acquire_time),
            "renewTime": _micro_time(record.renew_time),
            "leaseTransitions": record.transitions,
        },
    }


class KubernetesLeaseStore:
    def __init__(self, api_client: client.ApiClient, namespace: str, name: str) -> None:
        # Raw JSON in and out (_preload_content=False): the Lease's MicroTime fields are formatted here.
        self.api: Any = client.CoordinationV1Api(api_client)
        self.namespace = namespace
        self.name = name

    def read(self) -> LeaseRecord | None:
        try:
            response = self.api.read_namespaced_lease(
                self.name, self.namespace, _preload_content=False, _request_timeout=REQUEST_TIMEOUT_SECONDS
            )
        except ApiException as error:
            if error.status == 404:
                return None
            raise
        return record_of(json.loads(response.data))

    def write(self, record: LeaseRecord) -> LeaseRecord:
        body = lease_body(self.name, self.namespace, record)
        try:
            if record.resource_version is None:
                response = self.api.create_namespaced_lease(
                    self.namespace, body, _preload_content=False, _request_timeout=REQUEST_TIMEOUT_SECONDS
                )
            else:
                response = self.api.replace_namespaced_lease(
                    self.name, self.namespace, body, _preload_content=False, _request_timeout=REQUEST_TIMEOUT_SECONDS
                )
        except ApiException as error:
            if error.status == 409:  # created by another replica, or changed since it was read
                raise LeaseConflict(str(error.reason)) from None
            raise
        return record_of(json.loads(response.data))
