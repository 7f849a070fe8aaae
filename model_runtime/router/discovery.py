"""Where the routing config and the endpoints come from: the Kubernetes API (a watch on the ConfigMap and on
the EndpointSlices of the ModelDeployment's revision Services, as kube-proxy and every mesh find
endpoints; least privilege), or a file (tests and benchmarks). Watches run in threads and hand their
results to the event loop."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
import time
from pathlib import Path
from typing import Any

from model_runtime.contract import LABEL_REVISION, ROUTING_KEY, SERVICE_PORT_NAME, model_pods_label_selector

from .state import RouterState

log = logging.getLogger("model_runtime.router")


def ready_endpoints(slices: list[dict[str, Any]], port: int) -> tuple[dict[str, list[str]], set[str]]:
    """(ready host:port per revision, every revision with an endpoint at all) from EndpointSlices. A slice
    carries its Service's labels, so its revision; an endpoint that is not ready (unready, or terminating)
    is out of rotation. The slice's own port wins over `port`, which is only the fallback."""
    ready: dict[str, list[str]] = {}
    known: set[str] = set()
    for endpoint_slice in slices:
        revision = ((endpoint_slice.get("metadata") or {}).get("labels") or {}).get(LABEL_REVISION)
        if not revision or endpoint_slice.get("addressType", "IPv4") != "IPv4":
            continue
        ports = endpoint_slice.get("ports") or []
        named = [p.get("port") for p in ports if p.get("name") == SERVICE_PORT_NAME and p.get("port")]
        target = named[0] if named else port
        for endpoint in endpoint_slice.get("endpoints") or []:
            addresses = endpoint.get("addresses") or []
            if not addresses:
                continue
            known.add(revision)
            if (endpoint.get("conditions") or {}).get("ready") is True:
                ready.setdefault(revision, []).append(f"{addresses[0]}:{target}")
    return ready, known


class FileDiscovery:
    """{"routing": {...}, "endpoints": {"REVISION": ["host:port", ...]}}, re-read when it changes."""

    def __init__(self, path: str, state: RouterState) -> None:
        self.path = Path(path)
        self.state = state
        self._seen: float | None = None

    async def run(self) -> None:
        while True:
            with contextlib.suppress(OSError):
                stamp = self.path.stat().st_mtime_ns
                if stamp != self._seen:
                    self._seen = stamp
                    self.load(self.path.read_text())
            await asyncio.sleep(0.2)

    def load(self, text: str) -> None:
        try:
            document = json.loads(text)
            endpoints = {str(k): [str(a) for a in v] for k, v in document.get("endpoints", {}).items()}
            routing = json.dumps(document.get("routing"))
        except (ValueError, AttributeError, TypeError) as error:
            self.state.offer_config(f"unreadable file: {error}")
            return
        self.state.set_endpoints(endpoints, set(endpoints))
        self.state.offer_config(routing)


class KubeDiscovery:
    """Watches the routing ConfigMap (by name) and the EndpointSlices of the model Services (by label) of
    one ModelDeployment."""

    def __init__(self, namespace: str, model_deployment: str, configmap: str, port: int, state: RouterState) -> None:
        self.namespace, self.name, self.configmap, self.port = namespace, model_deployment, configmap, port
        self.state = state
        self._stop = threading.Event()

    async def run(self) -> None:
        from kubernetes import client, config

        try:
            config.load_incluster_config()  # type: ignore[no-untyped-call]
            api = client.ApiClient()
        except config.ConfigException:
            api = config.new_client_from_config()  # type: ignore[no-untyped-call]
        core, discovery = client.CoreV1Api(api), client.DiscoveryV1Api(api)
        loop = asyncio.get_running_loop()
        threads = [
            threading.Thread(target=self._watch_config, args=(core, api, loop), daemon=True, name="watch-config"),
            threading.Thread(
                target=self._watch_endpoints, args=(discovery, api, loop), daemon=True, name="watch-endpoints"
            ),
        ]
        for thread in threads:
            thread.start()
        try:
            await asyncio.Event().wait()
        finally:
            self._stop.set()

    def _watch_config(self, core: Any, api: Any, loop: asyncio.AbstractEventLoop) -> None:
        from kubernetes import watch

        selector = f"metadata.name={self.configmap}"
        while not self._stop.is_set():
            try:
                listing = core.list_namespaced_config_map(self.namespace, field_selector=selector)
                for item in listing.items:
                    loop.call_soon_threadsafe(self.state.offer_config, (item.data or {}).get(ROUTING_KEY))
                for event in watch.Watch().stream(  # type: ignore[no-untyped-call]
                    core.list_namespaced_config_map,
                    self.namespace,
                    field_selector=selector,
                    timeout_seconds=120,
                    resource_version=listing.metadata.resource_version,
                ):
                    if event["type"] in ("ADDED", "MODIFIED"):
                        data = event["object"].data or {}
                        loop.call_soon_threadsafe(self.state.offer_config, data.get(ROUTING_KEY))
            except Exception as error:  # the API server restarting, a watch expiring: list again
                log.warning("routing config watch: %s; retrying", error)
                time.sleep(1)

    def _watch_endpoints(self, discovery: Any, api: Any, loop: asyncio.AbstractEventLoop) -> None:
        from kubernetes import watch

        selector = model_pods_label_selector(self.name)
        while not self._stop.is_set():
            try:
                listing = discovery.list_namespaced_endpoint_slice(self.namespace, label_selector=selector)
                slices = {s.metadata.uid: api.sanitize_for_serialization(s) for s in listing.items}
                self._publish(slices, loop)
                for event in watch.Watch().stream(  # type: ignore[no-untyped-call]
                    discovery.list_namespaced_endpoint_slice,
                    self.namespace,
                    label_selector=selector,
                    timeout_seconds=120,
                    resource_version=listing.metadata.resource_version,
                ):
                    endpoint_slice = api.sanitize_for_serialization(event["object"])
                    if event["type"] == "DELETED":
                        slices.pop(endpoint_slice["metadata"]["uid"], None)
                    else:
                        slices[endpoint_slice["metadata"]["uid"]] = endpoint_slice
                    self._publish(slices, loop)
            except Exception as error:
                log.warning("endpoint watch: %s; retrying", error)
                time.sleep(1)

    def _publish(self, slices: dict[str, dict[str, Any]], loop: asyncio.AbstractEventLoop) -> None:
        ready, known = ready_endpoints(list(slices.values()), self.port)
        loop.call_soon_threadsafe(self.state.set_endpoints, ready, known)
