"""Bring a real Kubernetes cluster up from parts, and take it down again.

etcd, kube-apiserver (TLS, Node and RBAC authorization), kube-controller-manager, kube-scheduler,
Prometheus with Kubernetes service discovery, and one real node (containerd, kubelet, kube-proxy: see
node.py). Everything runs inside the cluster's own network and mount namespaces (namespaces.py), so its
addresses and mounts never reach the machine; a client enters the network namespace with `enter()`.
Every component runs detached with a pid file, so `up` can return while the cluster runs and `down` can
end it from another process. A bring-up first removes what a crashed cluster left behind.
"""

from __future__ import annotations

import json
import os
import shutil
import ssl
import sys
import time
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml

from model_runtime.contract import identity_relabelings

from . import images, tools
from .namespaces import NamespaceError, Namespaces, stale_clusters, stop_processes
from .node import NODE_IP, NODE_NAME, SERVICE_CIDR, Node, NodeError, cgroup_clusters, cgroup_processes, remove_cgroups
from .pki import Authority, service_account_keys
from .processes import Background, ComponentDied, pid_alive, wait_for

# Inside the cluster's network namespace every port is free: fixed ones keep the cluster easy to read.
ETCD_PORT = 2379
API_PORT = 6443
PROMETHEUS_PORT = 9090
REPO_ROOT = Path(__file__).resolve().parents[2]
# What the node needs from Debian (see tools.DEBIAN_PACKAGES).
NODE_COMMANDS = ("containerd", "runc", "iptables", "conntrack", "nsenter", str(Path("/usr/lib/cni/bridge")))
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
    "endpoints-controller",
    "endpointslice-controller",
    "endpointslice-mirroring-controller",
    "job-controller",
    "disruption-controller",
    "ttl-after-finished-controller",
    "node-lifecycle-controller",  # lifts the not-ready taint kubelet registers the node with
]


WRITE_VERBS = ["create", "update", "patch", "delete", "deletecollection"]
AUDIT_POLICY = {
    "apiVersion": "audit.k8s.io/v1",
    "kind": "Policy",
    "omitStages": ["RequestReceived"],
    "rules": [
        {"level": "None", "userGroups": ["system:serviceaccounts:kube-system"]},
        {"level": "Metadata", "userGroups": ["system:serviceaccounts"], "verbs": WRITE_VERBS},
        {"level": "None"},
    ],
}


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
    node_ip: str  # the node's address, inside the cluster's network namespace
    scrape_interval: str
    runtime_image: str  # ModelShip's images as its node has them (built from this checkout)
    operator_image: str

    @classmethod
    def load(cls, root: Path) -> ClusterInfo:
        return cls(**json.loads((root / "cluster.json").read_text()))


class ControlPlane:
    """One local cluster living in `root`."""

    def __init__(
        self,
        name: str = "default",
        root: Path | None = None,
        scrape_interval: str = "1s",
        backoff_seconds: float = 10.0,
        scrape_targets: tuple[str, ...] = (),
    ) -> None:
        self.name = name
        self.scrape_targets = scrape_targets  # host:port inside the cluster's network, besides the pods
        self.backoff_seconds = backoff_seconds
        self.root = root or state_root() / name
        self.scrape_interval = scrape_interval
        self.pki = self.root / "pki"
        self.logs = self.root / "logs"
        self.pids = self.root / "pids"
        self.namespaces = Namespaces(name)
        self.node = Node(name, self.root, self.namespaces, self.pki)

    # ---- components -------------------------------------------------------------------------------
    def _component(self, name: str, argv: list[str]) -> Background:
        return Background(name, argv, self.logs / f"{name}.log", self.pids / f"{name}.pid", cwd=self.root)

    def _inside(self, name: str, argv: list[str]) -> Background:
        return self._component(name, self.namespaces.argv(argv))

    def components(self, info: ClusterInfo) -> list[Background]:
        kube = tools.KUBERNETES
        pki = self.pki
        etcd = self._inside(
            "etcd",
            [
                str(tools.ETCD.binary("etcd")),
                "--name=local",
                f"--data-dir={self.root / 'etcd'}",
                f"--listen-client-urls=http://127.0.0.1:{ETCD_PORT}",
                f"--advertise-client-urls=http://127.0.0.1:{ETCD_PORT}",
                f"--listen-peer-urls=http://127.0.0.1:{ETCD_PORT + 1}",
                f"--initial-advertise-peer-urls=http://127.0.0.1:{ETCD_PORT + 1}",
                f"--initial-cluster=local=http://127.0.0.1:{ETCD_PORT + 1}",
                "--unsafe-no-fsync",
                "--log-level=warn",
                "--quota-backend-bytes=2147483648",
            ],
        )
        apiserver = self._inside(
            "kube-apiserver",
            [
                str(kube.binary("kube-apiserver")),
                f"--etcd-servers=http://127.0.0.1:{ETCD_PORT}",
                "--bind-address=0.0.0.0",
                f"--advertise-address={NODE_IP}",
                f"--secure-port={API_PORT}",
                f"--tls-cert-file={pki / 'apiserver.crt'}",
                f"--tls-private-key-file={pki / 'apiserver.key'}",
                f"--client-ca-file={pki / 'ca.crt'}",
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                f"--service-account-key-file={pki / 'sa.pub'}",
                f"--service-account-signing-key-file={pki / 'sa.key'}",
                "--authorization-mode=Node,RBAC",
                "--enable-admission-plugins=NodeRestriction",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                "--allow-privileged=true",
                f"--kubelet-client-certificate={pki / 'apiserver-kubelet-client.crt'}",
                f"--kubelet-client-key={pki / 'apiserver-kubelet-client.key'}",
                "--kubelet-preferred-address-types=InternalIP",
                "--enable-priority-and-fairness=false",
                "--profiling=false",
                f"--audit-policy-file={self.root / 'audit-policy.yaml'}",
                f"--audit-log-path={self.audit_log}",
                "--audit-log-maxsize=200",
                "--audit-log-maxbackup=1",
                "--v=1",
            ],
        )
        controller_manager = self._inside(
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
        prometheus = self._inside(
            "prometheus",
            [
                str(tools.PROMETHEUS.binary("prometheus")),
                f"--config.file={self.root / 'prometheus.yml'}",
                f"--storage.tsdb.path={self.root / 'prometheus-data'}",
                f"--web.listen-address=0.0.0.0:{PROMETHEUS_PORT}",
                "--web.enable-lifecycle",
                "--storage.tsdb.retention.time=1d",
                "--log.level=warn",
            ],
        )
        scheduler = self._inside(
            "kube-scheduler",
            [
                str(kube.binary("kube-scheduler")),
                f"--kubeconfig={self.root / 'scheduler.kubeconfig'}",
                f"--authentication-kubeconfig={self.root / 'scheduler.kubeconfig'}",
                f"--authorization-kubeconfig={self.root / 'scheduler.kubeconfig'}",
                "--leader-elect=false",
                "--bind-address=127.0.0.1",
                "--v=1",
            ],
        )
        return [etcd, apiserver, controller_manager, scheduler, prometheus, *self.node.components(self._component)]

    # ---- up / down --------------------------------------------------------------------------------
    def up(self, timeout: float = 90.0, progress: Any = None, private_store: tuple[str, ...] = ()) -> ClusterInfo:
        """Start every component, wait until each is ready, and return how to reach the cluster (from
        inside its network namespace: see `enter`). `private_store` names the images ("base", "runtime",
        "operator") of a node with an image store of its own, for a second cluster beside the suite's: the
        shared store, which has them all, is one cluster's at a time."""
        say = progress or (lambda text: print(f"[cluster] {text}", file=sys.stderr))
        started = time.monotonic()
        if self.is_running():
            raise RuntimeError(
                f"cluster {self.name!r} is already running in {self.root}; "
                f"run `python -m e2e.cluster down --name {self.name}` first"
            )
        for tool in tools.ALL_TOOLS:
            tools.build(tool)
        tools.require_debian_packages(*NODE_COMMANDS)
        built = images.build()
        sweep_leftovers(say)
        self.root.mkdir(parents=True, exist_ok=True)
        info = ClusterInfo(
            name=self.name,
            root=str(self.root),
            kubeconfig=str(self.root / "kubeconfig"),
            api_server=f"https://{NODE_IP}:{API_PORT}",
            prometheus=f"http://{NODE_IP}:{PROMETHEUS_PORT}",
            node_ip=NODE_IP,
            scrape_interval=self.scrape_interval,
            runtime_image=built.runtime,
            operator_image=built.operator,
        )
        self._write_credentials(info)
        (self.root / "cluster.json").write_text(json.dumps(asdict(info), indent=2))
        if private_store:
            self.node.store = self.root / "containerd" / "store"
            self.node.preload = private_store
        try:
            self.namespaces.create()
            self.namespaces.call_inside(lambda: self._start(info, built, say, started))
        except (ComponentDied, TimeoutError, NodeError, NamespaceError, RuntimeError):
            self.down(grace=3)
            raise
        say(f"cluster {self.name!r} up in {time.monotonic() - started:.1f}s; kubeconfig: {info.kubeconfig}")
        return info

    def _start(self, info: ClusterInfo, built: images.Images, say: Any, started: float) -> None:
        etcd, apiserver, controller_manager, scheduler, prometheus, containerd, kubelet, proxy = self.components(info)
        running: list[Background] = []
        with self.node.store_lock() as lock:
            self.node.prepare()
            self.node.write_config(built.pause)
            etcd.start()
            running.append(etcd)
            wait_for(lambda: _http_ok(f"http://127.0.0.1:{ETCD_PORT}/health"), "etcd ready", 30, running)
            apiserver.start()
            containerd.pass_fds = (lock.fileno(),)
            containerd.start()
            running += [apiserver, containerd]
            wait_for(lambda: self._api_ok("/readyz"), "kube-apiserver ready", 60, running)
            say(f"kube-apiserver ready at {info.api_server} ({time.monotonic() - started:.1f}s)")
            for component in (controller_manager, scheduler, prometheus):
                component.start()
                running.append(component)
            wait_for(self.node.socket.exists, "containerd serving", 30, running)
            self.node.remove_leftover_containers()
            self.node.import_images(built, say)
            kubelet.start()
            proxy.start()
            running += [kubelet, proxy]
        wait_for(lambda: _http_ok(f"{info.prometheus}/-/ready"), "prometheus ready", 30, running)
        wait_for(self._default_service_account_exists, "kube-controller-manager creating ServiceAccounts", 60, running)
        wait_for(self._node_ready, f"node {NODE_NAME} Ready and without taints", 60, running)

    def update_images(self, say: Any = None) -> ClusterInfo:
        """Build the images of the checkout as it is now, give them to the running node, and record them:
        a cluster kept running across code changes (MODELSHIP_E2E_CLUSTER) runs the new code."""
        built = images.build()
        self.node.import_images(built, say or (lambda text: print(f"[cluster] {text}", file=sys.stderr)))
        info = ClusterInfo.load(self.root)
        info.runtime_image, info.operator_image = built.runtime, built.operator
        (self.root / "cluster.json").write_text(json.dumps(asdict(info), indent=2))
        return info

    def enter(self) -> None:
        """Move the calling thread (and the threads and processes it starts from now on) into the cluster's
        network namespace, where its addresses are."""
        self.namespaces.enter_network()

    def down(self, grace: float = 15.0) -> None:
        """Stop every component (kubelet and containerd first: they stop the pods), then remove every
        process, mount, namespace and cgroup the cluster made, and its state."""
        if (self.root / "cluster.json").exists():
            for component in reversed(self.components(ClusterInfo.load(self.root))):
                component.stop(grace=grace)
        remove_cluster(self.name, self.root)

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
                NODE_IP,
            ),
        )
        ca.issue("apiserver-kubelet-client", "kube-apiserver-kubelet-client", organization="system:masters")
        ca.issue("admin", "kubernetes-admin", organization="system:masters")
        ca.issue("controller-manager", "system:kube-controller-manager")
        ca.issue("scheduler", "system:kube-scheduler")
        ca.issue("kube-proxy", "system:kube-proxy")
        ca.issue("kubelet", f"system:node:{NODE_NAME}", organization="system:nodes")
        ca.issue("kubelet-serving", f"system:node:{NODE_NAME}", server=True, hosts=(NODE_IP, NODE_NAME))
        service_account_keys(self.pki)
        self._kubeconfig(self.root / "kubeconfig", info, "admin")
        for user in ("controller-manager", "scheduler", "kube-proxy", "kubelet"):
            self._kubeconfig(self.root / f"{user}.kubeconfig", info, user)
        self._prometheus_config(info)
        (self.root / "audit-policy.yaml").write_text(yaml.safe_dump(AUDIT_POLICY, sort_keys=False))

    @property
    def audit_log(self) -> Path:
        """The API server's audit log: every write by a service account outside kube-system (workloads such
        as the operator), at Metadata level, one JSON event per line."""
        return self.root / "audit.log"

    def audit_events(self) -> list[dict[str, Any]]:
        if not self.audit_log.exists():
            return []
        return [json.loads(line) for line in self.audit_log.read_text().splitlines() if line.strip()]

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
                        *identity_relabelings(),
                    ],
                    # ModelShip's own series carry their identity labels; those win over the pod's.
                    "honor_labels": True,
                }
            ],
        }
        if self.scrape_targets:
            config["scrape_configs"].append(  # type: ignore[attr-defined]
                {
                    "job_name": "targets",
                    "honor_labels": True,
                    "static_configs": [{"targets": list(self.scrape_targets)}],
                }
            )
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
        """Ready, and schedulable: no taint left from its start."""
        node = self.api_get(f"/api/v1/nodes/{NODE_NAME}")
        ready = any(c["type"] == "Ready" and c["status"] == "True" for c in node["status"].get("conditions", []))
        return ready and not node["spec"].get("taints")


def _http_ok(url: str) -> bool:
    with urllib.request.urlopen(url, timeout=2) as response:
        return bool(response.status == 200)


def _processes_under(root: Path) -> list[int]:
    """Processes whose command line points into the cluster directory (every component's does)."""
    found = []
    marker = f"{root}/"
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if marker in cmdline:
            found.append(int(entry.name))
    return found


def remove_cluster(name: str, root: Path) -> None:
    """Everything cluster `name` made, whether it was taken down or crashed: processes (components, the
    containers in its cgroups), its namespaces (which frees their mounts), cgroups and state."""
    stop_processes(sorted(set(_processes_under(root)) | set(cgroup_processes(name))), grace=3)
    Namespaces(name).remove(grace=3)
    stop_processes(cgroup_processes(name), grace=1)
    remove_cgroups(name)
    shutil.rmtree(root, ignore_errors=True)


def sweep_leftovers(say: Any) -> None:
    """Remove clusters a crash left behind: state, namespaces or cgroups whose components are all gone."""
    live = set()
    for cluster in state_root().glob("*/cluster.json"):
        if ControlPlane(cluster.parent.name, root=cluster.parent).is_running():
            live.add(cluster.parent.name)
    leftovers = {n.name for n in stale_clusters(live)}
    leftovers |= {p.name for p in state_root().glob("*") if p.is_dir() and p.name not in live}
    leftovers |= cgroup_clusters() - live
    for name in sorted(leftovers):
        say(f"removing what cluster {name!r} left behind")
        remove_cluster(name, state_root() / name)
