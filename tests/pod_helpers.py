"""A pod and an API reader for the pod runner's rules, without a cluster."""

from __future__ import annotations

from typing import Any

from e2e.cluster.podspec import Reader

POD: dict[str, Any] = {
    "metadata": {"name": "p", "namespace": "ns", "uid": "u-1", "labels": {"app": "x"}},
    "spec": {"nodeName": "modelship-local", "serviceAccountName": "sa", "containers": []},
    "status": {"podIP": "127.77.1.9"},
}


def reader(
    secrets: dict[str, dict[str, str]] | None = None,
    maps: dict[str, dict[str, str]] | None = None,
    claims: dict[str, str] | None = None,
) -> Reader:
    return Reader(
        secret=lambda ns, name: (secrets or {}).get(name),
        config_map=lambda ns, name: (maps or {}).get(name),
        claim_path=lambda ns, name: (claims or {}).get(name),
        token=lambda pod, audience, seconds: f"token-for-{pod['metadata']['name']}-{audience}",
    )
