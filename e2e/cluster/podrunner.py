"""The local pod runner: it plays kubelet (and the scheduler's binding step) for one node.

It registers Node `modelship-local`, binds Pending pods that fit it, runs each pod's containers as local
processes on the pod's own 127.x.y.N address, and reports status back. Pods see their ServiceAccount as in
a container: a projected token (from the TokenRequest API, bound to the pod), ca.crt and namespace files
at /var/run/secrets/kubernetes.io/serviceaccount, and KUBERNETES_SERVICE_HOST/PORT pointing at the API
server's loopback address. Container logs are files under the cluster directory and are also served to
`kubectl logs` through a kubelet-style HTTPS endpoint.

    python -m e2e.cluster.podrunner --cluster DIR
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import logging
import os
import platform
import re
import signal
import ssl
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

from kubernetes import client, config, watch
from kubernetes.client.exceptions import ApiException

from . import tools
from .controlplane import NODE_NAME, ClusterInfo
from .pods import PodSupervisor, now_rfc3339
from .podspec import REPO_ROOT, Reader

log = logging.getLogger("podrunner")
HEARTBEAT_SECONDS = 10.0
# The entrypoints of ModelShip's images (see docker/); a container without `command` runs its image's.
IMAGE_ENTRYPOINTS: dict[str, list[str]] = {}


def load_image_entrypoints() -> dict[str, list[str]]:
    """Read `ENTRYPOINT [...]` and the `modelship.image` label from the repo's Dockerfiles."""

    entrypoints: dict[str, list[str]] = {}
    for dockerfile in sorted((REPO_ROOT / "docker").glob("*.Dockerfile")):
        text = dockerfile.read_text()
        entry = re.findall(r"^ENTRYPOINT\s+(\[.*\])\s*$", text, flags=re.MULTILINE)
        image = re.findall(r'^LABEL\s+modelship\.image="([^"]+)"', text, flags=re.MULTILINE)
        if entry and image:
            entrypoints[image[-1]] = json.loads(entry[-1])
    return entrypoints


class PodRunner:
    def __init__(self, root: Path, backoff_base: float = 10.0) -> None:
        self.root = root
        self.info = ClusterInfo.load(root)
        self.pods_dir = root / "pods"
        self.pods_dir.mkdir(exist_ok=True)
        self.backoff_base = backoff_base
        api_client = config.new_client_from_config(config_file=self.info.kubeconfig)
        self.api_client = api_client
        self.core = client.CoreV1Api(api_client)
        self.supervisors: dict[str, PodSupervisor] = {}
        self._ips: dict[str, str] = {}
        self._ip_lock = threading.Lock()
        self._stop = threading.Event()
        self.entrypoints = {**load_image_entrypoints(), **IMAGE_ENTRYPOINTS}
        self.reader = Reader(
            secret=self._secret, config_map=self._config_map, claim_path=self._claim_path, token=self._token
        )

    # ---- API helpers ------------------------------------------------------------------------------
    def _raw(self, obj: Any) -> dict[str, Any]:
        raw: dict[str, Any] = self.api_client.sanitize_for_serialization(obj)
        return raw

    def _secret(self, namespace: str, name: str) -> dict[str, str] | None:
        try:
            return {k: str(v) for k, v in (self.core.read_namespaced_secret(name, namespace).data or {}).items()}
        except ApiException as error:
            if error.status == 404:
                return None
            raise

    def _config_map(self, namespace: str, name: str) -> dict[str, str] | None:
        try:
            return dict(self.core.read_namespaced_config_map(name, namespace).data or {})
        except ApiException as error:
            if error.status == 404:
                return None
            raise

    def _claim_path(self, namespace: str, name: str) -> str | None:
        try:
            claim = self.core.read_namespaced_persistent_volume_claim(name, namespace)
        except ApiException as error:
            if error.status == 404:
                return None
            raise
        if claim.status.phase != "Bound" or not claim.spec.volume_name:
            return None
        volume = self.core.read_persistent_volume(claim.spec.volume_name)
        if volume.spec.host_path is not None:
            return str(volume.spec.host_path.path)
        if volume.spec.local is not None:
            return str(volume.spec.local.path)
        raise ValueError(f"persistentvolume {volume.metadata.name!r} is neither hostPath nor local")

    def _token(self, pod: dict[str, Any], audience: str | None, seconds: int) -> str:
        meta = pod["metadata"]
        request = client.AuthenticationV1TokenRequest(
            spec=client.V1TokenRequestSpec(
                audiences=[audience] if audience else [],
                expiration_seconds=max(seconds, 600),
                bound_object_ref=client.V1BoundObjectReference(
                    kind="Pod", api_version="v1", name=meta["name"], uid=meta["uid"]
                ),
            )
        )
        account = pod["spec"].get("serviceAccountName") or "default"
        response = self.core.create_namespaced_service_account_token(account, meta["namespace"], request)
        return str(response.status.token)

    def patch_status(self, pod: dict[str, Any], status: dict[str, Any]) -> bool:
        meta = pod["metadata"]
        try:
            self.core.patch_namespaced_pod_status(
                meta["name"], meta["namespace"], {"status": status}, _content_type="application/merge-patch+json"
            )
            return True
        except ApiException as error:
            if error.status != 404:
                log.warning("pod %s/%s: status update failed: %s", meta["namespace"], meta["name"], error.reason)
            return False

    def finish_deletion(self, pod: dict[str, Any]) -> None:
        meta = pod["metadata"]
        with contextlib.suppress(ApiException):
            self.core.delete_namespaced_pod(
                meta["name"],
                meta["namespace"],
                grace_period_seconds=0,
                body=client.V1DeleteOptions(grace_period_seconds=0, preconditions={"uid": meta["uid"]}),
            )

    def event(self, pod: dict[str, Any], reason: str, message: str, kind: str = "Normal") -> None:
        meta = pod["metadata"]
        stamp = datetime.datetime.now(datetime.UTC)
        body = client.CoreV1Event(
            metadata=client.V1ObjectMeta(generate_name=f"{meta['name']}.", namespace=meta["namespace"]),
            involved_object=client.V1ObjectReference(
                kind="Pod", name=meta["name"], namespace=meta["namespace"], uid=meta["uid"], api_version="v1"
            ),
            reason=reason,
            message=message,
            type=kind,
            count=1,
            first_timestamp=stamp,
            last_timestamp=stamp,
            source=client.V1EventSource(component="kubelet", host=NODE_NAME),
        )
        with contextlib.suppress(ApiException):
            self.core.create_namespaced_event(meta["namespace"], body)

    # ---- what the node gives every container ------------------------------------------------------
    def base_env(self, pod: dict[str, Any]) -> dict[str, str]:
        venv_bin = str(Path(sys.executable).parent)
        return {
            "PATH": f"{venv_bin}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "HOSTNAME": pod["metadata"]["name"],
            # Where the image would have ModelShip installed; here the repository is the image.
            "PYTHONPATH": str(REPO_ROOT),
            "KUBERNETES_SERVICE_HOST": "127.0.0.1",
            "KUBERNETES_SERVICE_PORT": str(self.info.api_port),
            "KUBERNETES_SERVICE_PORT_HTTPS": str(self.info.api_port),
            "MODELSHIP_CLUSTER_ROOT": str(self.root),
        }

    def entrypoint(self, image: str) -> list[str] | None:
        repository = image.rsplit(":", 1)[0] if ":" in image.rsplit("/", 1)[-1] else image
        return self.entrypoints.get(repository)

    # ---- addresses --------------------------------------------------------------------------------
    def allocate_ip(self, uid: str) -> str:
        with self._ip_lock:
            if uid in self._ips:
                return self._ips[uid]
            used = set(self._ips.values())
            for host in range(2, 255):
                address = f"{self.info.pod_subnet}.{host}"
                if address not in used:
                    self._ips[uid] = address
                    return address
        raise RuntimeError(f"no free pod address left in {self.info.pod_subnet}.0/24")

    def release_ip(self, uid: str) -> None:
        with self._ip_lock:
            self._ips.pop(uid, None)

    # ---- node -------------------------------------------------------------------------------------
    def node_body(self) -> dict[str, Any]:
        stamp = now_rfc3339()
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        capacity = {
            "cpu": str(os.cpu_count() or 1),
            "memory": f"{memory // 1024}Ki",
            "pods": "250",
            "ephemeral-storage": "100Gi",
        }

        def condition(kind: str, status: str, reason: str, message: str) -> dict[str, str]:
            return {
                "type": kind,
                "status": status,
                "reason": reason,
                "message": message,
                "lastHeartbeatTime": stamp,
                "lastTransitionTime": stamp,
            }

        return {
            "capacity": capacity,
            "allocatable": capacity,
            "conditions": [
                condition("Ready", "True", "KubeletReady", "modelship pod runner is posting ready status"),
                condition("MemoryPressure", "False", "KubeletHasSufficientMemory", "ok"),
                condition("DiskPressure", "False", "KubeletHasNoDiskPressure", "ok"),
                condition("PIDPressure", "False", "KubeletHasSufficientPID", "ok"),
            ],
            "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}, {"type": "Hostname", "address": NODE_NAME}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": self.info.kubelet_port}},
            "nodeInfo": {
                "machineID": "modelship-local",
                "systemUUID": "modelship-local",
                "bootID": str(os.getpid()),
                "kernelVersion": platform.release(),
                "osImage": "local processes",
                "containerRuntimeVersion": "modelship-podrunner://0.1.0",
                "kubeletVersion": tools.KUBERNETES_VERSION,
                "kubeProxyVersion": "",
                "operatingSystem": "linux",
                "architecture": "amd64",
            },
        }

    def register_node(self) -> None:
        labels = {
            "kubernetes.io/hostname": NODE_NAME,
            "kubernetes.io/os": "linux",
            "kubernetes.io/arch": "amd64",
            "node.kubernetes.io/instance-type": "local",
        }
        with contextlib.suppress(ApiException):
            self.core.create_node(client.V1Node(metadata=client.V1ObjectMeta(name=NODE_NAME, labels=labels)))
        self.heartbeat()

    def heartbeat(self) -> None:
        self.core.patch_node_status(
            NODE_NAME, {"status": self.node_body()}, _content_type="application/merge-patch+json"
        )

    def node_labels(self) -> dict[str, str]:
        return dict(self.core.read_node(NODE_NAME).metadata.labels or {})

    # ---- binding (the scheduler's last step) ------------------------------------------------------
    def fits(self, pod: dict[str, Any], labels: dict[str, str]) -> str | None:
        """None when the pod may run here, else why not (shown as Unschedulable)."""
        spec = pod["spec"]
        for key, value in (spec.get("nodeSelector") or {}).items():
            if labels.get(key) != value:
                return f"0/1 nodes are available: node(s) didn't match Pod's node selector ({key}={value})"
        for container in spec.get("containers", []):
            for kind in ("limits", "requests"):
                for resource, amount in (container.get("resources", {}).get(kind) or {}).items():
                    if "/" in resource and not resource.startswith("hugepages") and str(amount) != "0":
                        return f"0/1 nodes are available: 1 Insufficient {resource}"
        return None

    def bind_loop(self) -> None:
        while not self._stop.is_set():
            try:
                labels = self.node_labels()
                stream = watch.Watch().stream(
                    self.core.list_pod_for_all_namespaces, field_selector="spec.nodeName=", timeout_seconds=30
                )
                for event in stream:
                    if self._stop.is_set():
                        return
                    pod = self._raw(event["object"])
                    if event["type"] == "DELETED" or pod["metadata"].get("deletionTimestamp"):
                        continue
                    if pod["spec"].get("schedulerName", "default-scheduler") != "default-scheduler":
                        continue
                    self._bind(pod, labels)
            except Exception as error:  # the API server restarting, a watch expiring: start over
                if not self._stop.is_set():
                    log.warning("binder: %s; retrying", error)
                    time.sleep(1)

    def _bind(self, pod: dict[str, Any], labels: dict[str, str]) -> None:
        meta = pod["metadata"]
        problem = self.fits(pod, labels)
        if problem:
            self.patch_status(
                pod,
                {
                    "conditions": [
                        {"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": problem}
                    ]
                },
            )
            return
        body = client.V1Binding(
            metadata=client.V1ObjectMeta(name=meta["name"], namespace=meta["namespace"]),
            target=client.V1ObjectReference(api_version="v1", kind="Node", name=NODE_NAME),
        )
        try:
            self.core.create_namespaced_pod_binding(meta["name"], meta["namespace"], body, _preload_content=False)
        except ApiException as error:
            if error.status not in (404, 409):
                log.warning("binding %s/%s failed: %s", meta["namespace"], meta["name"], error.reason)

    # ---- running ----------------------------------------------------------------------------------
    def pod_loop(self) -> None:
        while not self._stop.is_set():
            try:
                listing = self.core.list_pod_for_all_namespaces(field_selector=f"spec.nodeName={NODE_NAME}")
                seen = set()
                for item in listing.items:
                    pod = self._raw(item)
                    seen.add(pod["metadata"]["uid"])
                    self._dispatch("MODIFIED", pod)
                for uid in list(self.supervisors):
                    if uid not in seen:
                        self._dispatch("DELETED", {"metadata": {"uid": uid}})
                stream = watch.Watch().stream(
                    self.core.list_pod_for_all_namespaces,
                    field_selector=f"spec.nodeName={NODE_NAME}",
                    resource_version=listing.metadata.resource_version,
                    timeout_seconds=60,
                )
                for event in stream:
                    if self._stop.is_set():
                        return
                    self._dispatch(event["type"], self._raw(event["object"]))
            except Exception as error:
                if not self._stop.is_set():
                    log.warning("pod watch: %s; relisting", error)
                    time.sleep(1)

    def _dispatch(self, kind: str, pod: dict[str, Any]) -> None:
        uid = pod["metadata"]["uid"]
        supervisor = self.supervisors.get(uid)
        if kind == "DELETED":
            if supervisor is not None:
                supervisor.removed.set()
                supervisor.join(timeout=15)
                supervisor.cleanup()
                del self.supervisors[uid]
            return
        if supervisor is None:
            if (
                pod.get("status", {}).get("phase") in ("Succeeded", "Failed")
                and pod["spec"].get("restartPolicy") != "Always"
            ):
                return  # finished before this runner started; nothing to run
            if pod.get("status", {}).get("podIP"):
                with self._ip_lock:
                    self._ips[uid] = pod["status"]["podIP"]
            supervisor = PodSupervisor(self, pod)
            self.supervisors[uid] = supervisor
            supervisor.start()
        else:
            supervisor.update(pod)
        for finished in [u for u, s in self.supervisors.items() if not s.is_alive() and u != uid]:
            self.supervisors.pop(finished).cleanup()

    def heartbeat_loop(self) -> None:
        while not self._stop.wait(HEARTBEAT_SECONDS):
            with contextlib.suppress(Exception):
                self.heartbeat()

    # ---- kubelet API (logs) -----------------------------------------------------------------------
    def serve_logs(self) -> ThreadingHTTPServer:
        runner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                url = urlparse(self.path)
                match = re.fullmatch(r"/containerLogs/([^/]+)/([^/]+)/([^/]+)", url.path)
                if url.path == "/healthz":
                    self._reply(200, b"ok")
                    return
                if not match:
                    self._reply(404, b"not found")
                    return
                namespace, name, container = match.groups()
                query = parse_qs(url.query)
                previous = query.get("previous", ["false"])[0] == "true"
                for supervisor in list(runner.supervisors.values()):
                    meta = supervisor.pod["metadata"]
                    if meta["namespace"] == namespace and meta["name"] == name:
                        path = supervisor.log_path(container, previous=previous)
                        data = path.read_bytes() if path.exists() else b""
                        if "tailLines" in query:
                            lines = data.splitlines(keepends=True)
                            data = b"".join(lines[-int(query["tailLines"][0]) :])
                        self._reply(200, data)
                        return
                self._reply(404, f"pod {namespace}/{name} is not on this node".encode())

            def _reply(self, code: int, body: bytes) -> None:
                self.send_response(code)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                return

        server = ThreadingHTTPServer(("127.0.0.1", self.info.kubelet_port), Handler)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        pki = self.root / "pki"
        context.load_cert_chain(str(pki / "kubelet.crt"), str(pki / "kubelet.key"))
        server.socket = context.wrap_socket(server.socket, server_side=True)
        threading.Thread(target=server.serve_forever, name="kubelet-api", daemon=True).start()
        return server

    # ---- life -------------------------------------------------------------------------------------
    def run(self) -> None:
        self.register_node()
        server = self.serve_logs()
        threads = [
            threading.Thread(target=target, name=target.__name__, daemon=True)
            for target in (self.bind_loop, self.pod_loop, self.heartbeat_loop)
        ]
        for thread in threads:
            thread.start()
        log.info("pod runner for node %s serving pods on %s.0/24", NODE_NAME, self.info.pod_subnet)
        self._stop.wait()
        server.shutdown()
        supervisors = list(self.supervisors.values())
        for supervisor in supervisors:
            supervisor.stopping.set()
        for supervisor in supervisors:
            supervisor.join(timeout=20)

    def stop(self) -> None:
        self._stop.set()


def main() -> None:
    parser = argparse.ArgumentParser(description="Run pods of the local cluster as local processes.")
    parser.add_argument("--cluster", type=Path, required=True, help="the cluster directory (has cluster.json)")
    parser.add_argument(
        "--backoff-seconds",
        type=float,
        default=float(os.environ.get("MODELSHIP_PODRUNNER_BACKOFF_SECONDS", "10")),
        help="first crash-loop back-off; doubles up to 300s (kubelet: 10)",
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    runner = PodRunner(args.cluster, backoff_base=args.backoff_seconds)
    signal.signal(signal.SIGTERM, lambda *_: runner.stop())
    signal.signal(signal.SIGINT, lambda *_: runner.stop())
    runner.run()


if __name__ == "__main__":
    main()
