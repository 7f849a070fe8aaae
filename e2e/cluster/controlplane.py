"""Bring a real Kubernetes control plane up from parts, and take it down again.

etcd, kube-apiserver (TLS, RBAC), kube-controller-manager, Prometheus with Kubernetes service discovery,
and the pod runner that plays kubelet. Every port is picked at start; every component runs detached with a
pid file, so `up` can return while the cluster runs and `down` can end it from another process.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml

from . import tools
from .pki import Authority, service_account_keys
from .processes import Background, ComponentDied, free_port, pid_alive, wait_for

SERVICE_CIDR = "10.96.0.0/16"
NODE_NAME = "modelship-local"
REPO_ROOT = Path(__file__).resolve().parents[2]
CONTROLLERS = [
    "deployment-controller",
    "replicaset-controller",
    "garbage-collector-controller",
    "namespace-controller",
    "serviceaccount-controller",
    "serviceaccount-token-controller",
    "root-ca-certificate-publisher-controller",
    "persistentvolume-binder-controller",
    "pod-garbage-collector-controller",
]


def state_root() -> Path:
    return Path(os.environ.get("MODELSHIP_STATE_DIR", f"/tmp/modelship-{os.getuid()}"))


@dataclass
class ClusterInfo:
    """What clients need to reach a running cluster; saved as cluster.json in its directory."""

    name: str
    root: str
    kubeconfig: str
    api_server: str
    prometheus: str
    pod_subnet: str  # pods get addresses <pod_subnet>.N, inside 127.0.0.0/8
    etcd_port: int
    api_port: int
    prometheus_port: int
    kubelet_port: int
    scrape_interval: str

    @classmethod
    def load(cls, root: Path) -> ClusterInfo:
        return cls(**json.loads((root / "cluster.json").read_text()))


def _pick_pod_subnet(root: Path) -> str:
    """A /24 of 127.0.0.0/8 no other local cluster uses, so two clusters never share pod addresses."""
    taken = set()
    for other in state_root().glob("*/cluster.json"):
        if other.parent != root:
            try:
                taken.add(json.loads(other.read_text())["pod_subnet"])
            except (OSError, ValueError, KeyError):
                continue
    for index in range(1, 250):
        subnet = f"127.77.{index}"
        if subnet not in taken:
            return subnet
    raise RuntimeError(f"no free pod subnet left; remove stale clusters under {state_root()}")


class ControlPlane:
    """One local cluster living in `root`."""

    def __init__(
        self,
        name: str = "default",
        root: Path | None = None,
        scrape_interval: str = "1s",
        backoff_seconds: float = 10.0,
    ) -> None:
        self.name = name
        self.backoff_seconds = backoff_seconds
        self.root = root or state_root() / name
        self.scrape_interval = scrape_interval
        self.pki = self.root / "pki"
        self.logs = self.root / "logs"
        self.pids = self.root / "pids"

    # ---- components -------------------------------------------------------------------------------
    def _component(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> Background:
        return Background(name, argv, self.logs / f"{name}.log", self.pids / f"{name}.pid", env=env, cwd=self.root)

    def components(self, info: ClusterInfo) -> list[Background]:
        kube = tools.KUBERNETES
        pki = self.pki
        etcd = self._component(
            "etcd",
            [
                str(tools.ETCD.binary("etcd")),
                "--name=local",
                f"--data-dir={self.root / 'etcd'}",
                f"--listen-client-urls=http://127.0.0.1:{info.etcd_port}",
                f"--advertise-client-urls=http://127.0.0.1:{info.etcd_port}",
                f"--listen-peer-urls=http://127.0.0.1:{info.etcd_port + 1}",
                f"--initial-advertise-peer-urls=http://127.0.0.1:{info.etcd_port + 1}",
                f"--initial-cluster=local=http://127.0.0.1:{info.etcd_port + 1}",
                "--unsafe-no-fsync",
                "--log-level=warn",
                "--quota-backend-bytes=2147483648",
            ],
        )
        apiserver = self._component(
            "kube-apiserver",
            [
                str(kube.binary("kube-apiserver")),
                f"--etcd-servers=http://127.0.0.1:{info.etcd_port}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                f"--secure-port={info.api_port}",
                f"--tls-cert-file={pki / 'apiserver.crt'}",
                f"--tls-private-key-file={pki / 'apiserver.key'}",
                f"--client-ca-file={pki / 'ca.crt'}",
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                f"--service-account-key-file={pki / 'sa.pub'}",
                f"--service-account-signing-key-file={pki / 'sa.key'}",
                "--authorization-mode=RBAC",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                "--endpoint-reconciler-type=none",
                "--allow-privileged=true",
                f"--kubelet-client-certificate={pki / 'apiserver-kubelet-client.crt'}",
                f"--kubelet-client-key={pki / 'apiserver-kubelet-client.key'}",
                "--kubelet-preferred-address-types=InternalIP",
                "--enable-priority-and-fairness=false",
                "--profiling=false",
                "--v=1",
            ],
        )
        controller_manager = self._component(
            "kube-controller-manager",
            [
                str(kube.binary("kube-controller-manager")),
                f"--kubeconfig={self.root / 'controller-manager.kubeconfig'}",
                f"--controllers={','.join(CONTROLLERS)}",
                f"--service-account-private-key-file={pki / 'sa.key'}",
                f"--root-ca-file={pki / 'ca.crt'}",
                "--use-service-account-credentials=true",
                "--leader-elect=false",
                "--secure-port=0",
                "--concurrent-deployment-syncs=10",
                "--concurrent-replicaset-syncs=10",
                "--concurrent-gc-syncs=20",
                "--v=1",
            ],
        )
        prometheus = self._component(
            "prometheus",
            [
                str(tools.PROMETHEUS.binary("prometheus")),
                f"--config.file={self.root / 'prometheus.yml'}",
                f"--storage.tsdb.path={self.root / 'prometheus-data'}",
                f"--web.listen-address=127.0.0.1:{info.prometheus_port}",
                "--web.enable-lifecycle",
                "--storage.tsdb.retention.time=1d",
                "--log.level=warn",
            ],
        )
        podrunner = self._component(
            "podrunner",
            [
                sys.executable,
                "-m",
                "e2e.cluster.podrunner",
                f"--cluster={self.root}",
                f"--backoff-seconds={self.backoff_seconds}",
            ],
            env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        )
        return [etcd, apiserver, controller_manager, prometheus, podrunner]

    # ---- up / down --------------------------------------------------------------------------------
    def up(self, timeout: float = 90.0, progress: Any = None) -> ClusterInfo:
        """Start every component, wait until each is ready, and return how to reach the cluster."""
        say = progress or (lambda text: print(f"[cluster] {text}", file=sys.stderr))
        started = time.monotonic()
        if self.is_running():
            raise RuntimeError(
                f"cluster {self.name!r} is already running in {self.root}; "
                f"run `python -m e2e.cluster down --name {self.name}` first"
            )
        for tool in tools.ALL_TOOLS:
            tools.build(tool)
        self.root.mkdir(parents=True, exist_ok=True)
        info = ClusterInfo(
            name=self.name,
            root=str(self.root),
            kubeconfig=str(self.root / "kubeconfig"),
            api_server="",
            prometheus="",
            pod_subnet=_pick_pod_subnet(self.root),
            etcd_port=_free_pair(),
            api_port=free_port(),
            prometheus_port=free_port(),
            kubelet_port=free_port(),
            scrape_interval=self.scrape_interval,
        )
        info.api_server = f"https://127.0.0.1:{info.api_port}"
        info.prometheus = f"http://127.0.0.1:{info.prometheus_port}"
        self._write_credentials(info)
        (self.root / "cluster.json").write_text(json.dumps(asdict(info), indent=2))
        etcd, apiserver, controller_manager, prometheus, podrunner = self.components(info)
        running: list[Background] = []
        try:
            etcd.start()
            running.append(etcd)
            wait_for(lambda: _http_ok(f"http://127.0.0.1:{info.etcd_port}/health"), "etcd ready", 30, running)
            apiserver.start()
            running.append(apiserver)
            wait_for(lambda: self._api_ok("/readyz"), "kube-apiserver ready", 60, running)
            say(f"kube-apiserver ready at {info.api_server} ({time.monotonic() - started:.1f}s)")
            controller_manager.start()
            prometheus.start()
            podrunner.start()
            running += [controller_manager, prometheus, podrunner]
            wait_for(lambda: _http_ok(f"{info.prometheus}/-/ready"), "prometheus ready", 30, running)
            wait_for(
                self._default_service_account_exists, "kube-controller-manager creating ServiceAccounts", 60, running
            )
            wait_for(self._node_ready, f"pod runner registering node {NODE_NAME}", 30, running)
        except (ComponentDied, TimeoutError):
            for component in reversed(running):
                component.stop(grace=3)
            raise
        say(f"cluster {self.name!r} up in {time.monotonic() - started:.1f}s; kubeconfig: {info.kubeconfig}")
        return info

    def down(self, grace: float = 15.0) -> None:
        """Stop every component (the pod runner first, so it stops its pods) and remove the state."""
        if not (self.root / "cluster.json").exists():
            return
        info = ClusterInfo.load(self.root)
        for component in reversed(self.components(info)):
            component.stop(grace=grace)
        leftovers = _processes_under(self.root)
        for pid in leftovers:
            os.kill(pid, 9)
        _unmount_under(self.root)
        shutil.rmtree(self.root, ignore_errors=True)

    def is_running(self) -> bool:
        return any(pid_alive(int(p.read_text())) for p in self.pids.glob("*.pid") if p.read_text().strip())

    def check(self) -> None:
        """Raise ComponentDied naming any component that is no longer running."""
        for component in self.components(ClusterInfo.load(self.root)):
            component.check()

    # ---- credentials and configuration ------------------------------------------------------------
    def _write_credentials(self, info: ClusterInfo) -> None:
        self.pki.mkdir(parents=True, exist_ok=True)
        ca = Authority(self.pki)
        ca.issue(
            "apiserver",
            "kube-apiserver",
            server=True,
            hosts=(
                "127.0.0.1",
                "localhost",
                "kubernetes",
                "kubernetes.default",
                "kubernetes.default.svc",
                "kubernetes.default.svc.cluster.local",
                "10.96.0.1",
            ),
        )
        ca.issue("apiserver-kubelet-client", "kube-apiserver-kubelet-client", organization="system:masters")
        ca.issue("admin", "kubernetes-admin", organization="system:masters")
        ca.issue("controller-manager", "system:kube-controller-manager")
        ca.issue("kubelet", f"system:node:{NODE_NAME}", server=True, hosts=("127.0.0.1", "localhost"))
        service_account_keys(self.pki)
        self._kubeconfig(self.root / "kubeconfig", info, "admin")
        self._kubeconfig(self.root / "controller-manager.kubeconfig", info, "controller-manager")
        self._prometheus_config(info)

    def _kubeconfig(self, path: Path, info: ClusterInfo, cert: str) -> None:
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "current-context": "modelship-local",
            "clusters": [
                {
                    "name": "modelship-local",
                    "cluster": {"server": info.api_server, "certificate-authority": str(self.pki / "ca.crt")},
                }
            ],
            "users": [
                {
                    "name": cert,
                    "user": {
                        "client-certificate": str(self.pki / f"{cert}.crt"),
                        "client-key": str(self.pki / f"{cert}.key"),
                    },
                }
            ],
            "contexts": [{"name": "modelship-local", "context": {"cluster": "modelship-local", "user": cert}}],
        }
        path.write_text(yaml.safe_dump(config))
        path.chmod(0o600)

    def _prometheus_config(self, info: ClusterInfo) -> None:
        tls = {
            "ca_file": str(self.pki / "ca.crt"),
            "cert_file": str(self.pki / "admin.crt"),
            "key_file": str(self.pki / "admin.key"),
        }
        config = {
            "global": {
                "scrape_interval": info.scrape_interval,
                "scrape_timeout": info.scrape_interval,
                "evaluation_interval": "5s",
            },
            "scrape_configs": [
                {
                    "job_name": "kubernetes-pods",
                    "fallback_scrape_protocol": "PrometheusText0.0.4",
                    "kubernetes_sd_configs": [{"role": "pod", "api_server": info.api_server, "tls_config": tls}],
                    "relabel_configs": [
                        {
                            "source_labels": ["__meta_kubernetes_pod_annotation_prometheus_io_scrape"],
                            "action": "keep",
                            "regex": "true",
                        },
                        {"source_labels": ["__meta_kubernetes_pod_phase"], "action": "keep", "regex": "Running"},
                        {
                            "source_labels": ["__meta_kubernetes_pod_annotation_prometheus_io_path"],
                            "target_label": "__metrics_path__",
                            "regex": "(.+)",
                        },
                        {
                            "source_labels": [
                                "__meta_kubernetes_pod_ip",
                                "__meta_kubernetes_pod_annotation_prometheus_io_port",
                            ],
                            "regex": r"(.+);(\d+)",
                            "replacement": "$1:$2",
                            "target_label": "__address__",
                        },
                        {"source_labels": ["__meta_kubernetes_namespace"], "target_label": "kubernetes_namespace"},
                        {"source_labels": ["__meta_kubernetes_pod_name"], "target_label": "kubernetes_pod"},
                    ],
                }
            ],
        }
        (self.root / "prometheus.yml").write_text(yaml.safe_dump(config, sort_keys=False))

    # ---- readiness probes -------------------------------------------------------------------------
    def _ssl(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.pki / "ca.crt"))
        context.load_cert_chain(str(self.pki / "admin.crt"), str(self.pki / "admin.key"))
        return context

    def api_get(self, path: str) -> Any:
        info = ClusterInfo.load(self.root)
        with urllib.request.urlopen(info.api_server + path, context=self._ssl(), timeout=5) as response:
            body = response.read()
        return json.loads(body) if body.startswith(b"{") else body.decode()

    def _api_ok(self, path: str) -> bool:
        return bool(self.api_get(path) == "ok")

    def _default_service_account_exists(self) -> bool:
        return bool(self.api_get("/api/v1/namespaces/default/serviceaccounts/default").get("metadata"))

    def _node_ready(self) -> bool:
        node = self.api_get(f"/api/v1/nodes/{NODE_NAME}")
        return any(c["type"] == "Ready" and c["status"] == "True" for c in node["status"].get("conditions", []))


def _free_pair() -> int:
    """Two consecutive free ports (etcd's client and peer ports)."""
    for _ in range(50):
        port = free_port()
        try:
            with socket.socket() as probe:
                probe.bind(("127.0.0.1", port + 1))
            return port
        except OSError:
            continue
    raise RuntimeError("could not find two consecutive free ports on 127.0.0.1")


def _http_ok(url: str) -> bool:
    with urllib.request.urlopen(url, timeout=2) as response:
        return bool(response.status == 200)


def _processes_under(root: Path) -> list[int]:
    """Processes whose working directory or command line points into the cluster directory."""
    found = []
    marker = str(root)
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        if marker in cmdline or f"MODELSHIP_CLUSTER_ROOT={marker}".encode() in environ:
            found.append(int(entry.name))
    return found


def _unmount_under(root: Path) -> None:
    """Mounts live in each pod's private namespace; nothing should remain in ours, but make sure."""
    mounts = Path("/proc/self/mounts").read_text().splitlines()
    for line in reversed(mounts):
        target = line.split()[1]
        if target.startswith(str(root)):
            subprocess.run(["umount", "-l", target], capture_output=True, check=False)
