"""The local cluster's one real node: containerd, kubelet and kube-proxy inside the cluster's namespaces.

containerd (Debian's, with runc and the CNI plugins) serves CRI to kubelet; pods get addresses on a CNI
bridge; kube-proxy programs Services with iptables. All of it lives in the network and mount namespaces of
`namespaces.py`, so no pod or Service address, mount or iptables rule ever reaches the machine itself.
What this kind of machine needs (checked on Debian 12, root, cgroup v1, no systemd as PID 1): the cgroupfs
driver, runc, `restrict_oom_score_adj` (no CAP_SYS_RESOURCE), kubelet's `failCgroupV1: false`, and the
sysctls kubelet rewrites covered inside the mount namespace.

containerd's image store is shared by every bring-up (`~/.cache/modelship/containerd`), so ModelShip's
images are imported once per build, not once per cluster; a lock keeps it to one cluster at a time.
"""

from __future__ import annotations

import contextlib
import fcntl
import io
import json
import os
import subprocess
import tarfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import yaml

from . import tools
from .images import Images
from .namespaces import Namespaces
from .processes import Background

NODE_NAME = "modelship-local"
NODE_IP = "10.200.0.1"  # on the node's own interface, inside the cluster's network namespace only
POD_SUBNET = "10.244.0.0/24"
SERVICE_CIDR = "10.96.0.0/16"
POD_GATEWAY = "10.244.0.1"
KUBELET_PORT = 10250
CNI_PLUGINS = Path("/usr/lib/cni")
CGROUP_ROOT = Path("/sys/fs/cgroup")
K8S_NAMESPACE = "k8s.io"  # containerd's namespace for CRI
# Directories containerd, CNI and kubelet write to by their own defaults: private tmpfs in the mount
# namespace, so nothing lands on the machine.
PRIVATE_DIRECTORIES = ("/run", "/var/lib/cni", "/var/log")


class NodeError(RuntimeError):
    """The node could not be prepared; the message says which step and why."""


def store_root() -> Path:
    return tools.cache_root().parent / "containerd"


def _cgroup_hierarchies() -> list[Path]:
    """Every cgroup hierarchy's mount point: v1 controllers, the named `systemd` one (kubelet checks it) and
    the hybrid layout's v2 `unified` one (runc writes there too)."""
    found = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split()
        separator = fields.index("-")
        if fields[separator + 1] in ("cgroup", "cgroup2"):
            found.append(Path(fields[4]))
    return sorted(set(found))


def cgroup_directories(name: str) -> list[Path]:
    return [hierarchy / _cgroup_name(name) for hierarchy in _cgroup_hierarchies()]


def _cgroup_name(cluster: str) -> str:
    return f"modelship-{cluster}"


def cgroup_clusters() -> set[str]:
    """The clusters that have a cgroup root on this machine."""
    prefix = _cgroup_name("")
    return {d.name.removeprefix(prefix) for h in _cgroup_hierarchies() for d in h.glob(f"{prefix}*") if d.is_dir()}


def _cgroup_tree(top: Path, *, deepest_first: bool) -> list[Path]:
    """The cgroups at and under `top`. kubelet removes a pod's cgroups while this walks them, so a directory
    that vanishes mid-walk is skipped (os.walk ignores scandir errors) rather than failing the walk."""
    return [Path(parent) for parent, _, _ in os.walk(top, topdown=not deepest_first)]


def remove_cgroups(cluster: str) -> None:
    """Every cgroup under the cluster's root, deepest first (a cgroup is removed with rmdir once empty)."""
    for top in cgroup_directories(cluster):
        if not top.is_dir():
            continue
        for directory in _cgroup_tree(top, deepest_first=True):
            with contextlib.suppress(OSError):
                directory.rmdir()
        with contextlib.suppress(OSError):
            top.rmdir()


def cgroup_processes(cluster: str) -> list[int]:
    """Processes in any cgroup under the cluster's root: containers, which have namespaces of their own."""
    pids: set[int] = set()
    for top in cgroup_directories(cluster):
        for directory in _cgroup_tree(top, deepest_first=False):
            with contextlib.suppress(OSError, ValueError):
                pids.update(int(line) for line in (directory / "cgroup.procs").read_text().split())
    return sorted(pids)


@dataclass
class Node:
    """The node of cluster `cluster`, its state under `root`."""

    cluster: str
    root: Path
    namespaces: Namespaces
    pki: Path
    store: Path | None = None  # containerd's root; the shared store_root() when None
    preload: tuple[str, ...] = ("base", "runtime", "operator")  # besides the pause image

    @property
    def store_root(self) -> Path:
        return self.store or store_root()

    @property
    def socket(self) -> Path:
        return self.root / "containerd" / "containerd.sock"

    # ---- the namespaces' network and filesystem -----------------------------------------------------
    def prepare(self) -> None:
        """Loopback, the node's interface and address, forwarding, private directories, covered sysctls,
        and the cgroup root kubelet puts every pod under."""
        commands = [
            ["ip", "link", "set", "lo", "up"],
            ["ip", "link", "add", "node0", "type", "veth", "peer", "name", "node0-peer"],
            ["ip", "addr", "add", f"{NODE_IP}/32", "dev", "node0"],
            ["ip", "link", "set", "node0", "up"],
            ["ip", "link", "set", "node0-peer", "up"],
            # The namespace has no default route; the node itself reaches Services (kube-proxy's DNAT in
            # OUTPUT) once their range is routed somewhere.
            ["ip", "route", "add", SERVICE_CIDR, "dev", "node0"],
            ["sysctl", "-q", "-w", "net.ipv4.ip_forward=1"],
            ["sysctl", "-q", "-w", "net.ipv4.conf.all.route_localnet=1"],
        ]
        for argv in commands:
            self.namespaces.run(argv, f"preparing the node's network ({' '.join(argv)})")
        with contextlib.suppress(RuntimeError):  # only where br_netfilter is loaded; kube-proxy masquerades
            self.namespaces.run(["sysctl", "-q", "-w", "net.bridge.bridge-nf-call-iptables=1"], "bridge")
        for private in PRIVATE_DIRECTORIES:
            Path(private).mkdir(parents=True, exist_ok=True)
            self.namespaces.run(["mount", "-t", "tmpfs", "-o", "mode=0755", "tmpfs", private], f"a private {private}")
        self.namespaces.shield_sysctls(self.root / "sysctl")
        for directory in cgroup_directories(self.cluster):
            directory.mkdir(exist_ok=True)
            if directory.parent.name == "cpuset" or (directory.parent / "cpuset.cpus").exists():
                for name in ("cpuset.cpus", "cpuset.mems"):
                    (directory / name).write_text((directory.parent / name).read_text())

    # ---- configuration ------------------------------------------------------------------------------
    def write_config(self, pause_image: str) -> None:
        for directory in ("containerd", "cni", "kubelet", "pod-logs"):
            (self.root / directory).mkdir(parents=True, exist_ok=True)
        (self.root / "containerd" / "config.toml").write_text(self._containerd_config(pause_image))
        (self.root / "cni" / "10-modelship.conflist").write_text(json.dumps(self._cni_config(), indent=2))
        (self.root / "kubelet.yaml").write_text(yaml.safe_dump(self._kubelet_config(), sort_keys=False))
        (self.root / "kube-proxy.yaml").write_text(yaml.safe_dump(self._kube_proxy_config(), sort_keys=False))
        (self.root / "resolv.conf").write_text("# no cluster DNS: pods reach Services by address\n")

    def _containerd_config(self, pause_image: str) -> str:
        store, state = self.store_root, self.root / "containerd"
        cri = '[plugins."io.containerd.grpc.v1.cri"]'
        return f"""version = 2
root = "{store}"
state = "{state / "state"}"
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs",
  "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs",
  "io.containerd.tracing.processor.v1.otlp"]

[grpc]
  address = "{self.socket}"

[plugins."io.containerd.internal.v1.opt"]
  path = "{state / "opt"}"

{cri}
  sandbox_image = "{pause_image}"
  # this machine lacks CAP_SYS_RESOURCE: never lower a container's OOM score below containerd's own
  restrict_oom_score_adj = true
  disable_apparmor = true
  enable_selinux = false
  max_container_log_line_size = 16384

{cri[:-1]}.containerd]
  snapshotter = "overlayfs"
  default_runtime_name = "runc"

{cri[:-1]}.containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"

{cri[:-1]}.containerd.runtimes.runc.options]
  SystemdCgroup = false

{cri[:-1]}.cni]
  bin_dir = "{CNI_PLUGINS}"
  conf_dir = "{self.root / "cni"}"
  max_conf_num = 1
"""

    def _cni_config(self) -> dict[str, Any]:
        return {
            "cniVersion": "0.4.0",
            "name": "modelship",
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": "cni0",
                    "isGateway": True,
                    "ipMasq": False,
                    "hairpinMode": True,
                    "ipam": {
                        "type": "host-local",
                        "ranges": [[{"subnet": POD_SUBNET, "gateway": POD_GATEWAY}]],
                        "routes": [{"dst": "0.0.0.0/0"}],
                        "dataDir": str(self.root / "cni" / "ipam"),
                    },
                },
                {"type": "portmap", "capabilities": {"portMappings": True}},
            ],
        }

    def _kubelet_config(self) -> dict[str, Any]:
        pki = self.pki
        return {
            "apiVersion": "kubelet.config.k8s.io/v1beta1",
            "kind": "KubeletConfiguration",
            "failCgroupV1": False,
            "cgroupDriver": "cgroupfs",
            "cgroupRoot": f"/{_cgroup_name(self.cluster)}",
            "cgroupsPerQOS": True,
            "enforceNodeAllocatable": ["pods"],
            "containerRuntimeEndpoint": f"unix://{self.socket}",
            "address": NODE_IP,
            "port": KUBELET_PORT,
            "readOnlyPort": 0,
            "healthzBindAddress": "127.0.0.1",
            "healthzPort": 10248,
            "tlsCertFile": str(pki / "kubelet-serving.crt"),
            "tlsPrivateKeyFile": str(pki / "kubelet-serving.key"),
            "authentication": {
                "anonymous": {"enabled": False},
                "webhook": {"enabled": True},
                "x509": {"clientCAFile": str(pki / "ca.crt")},
            },
            "authorization": {"mode": "Webhook"},
            "podLogsDir": str(self.root / "pod-logs"),
            "resolvConf": str(self.root / "resolv.conf"),
            "clusterDomain": "cluster.local",
            "failSwapOn": False,
            "protectKernelDefaults": False,
            "serializeImagePulls": False,
            # The node shares the machine's disk: never evict for disk or collect ModelShip's images.
            "evictionHard": {
                "memory.available": "200Mi",
                "nodefs.available": "1%",
                "imagefs.available": "1%",
                "nodefs.inodesFree": "1%",
            },
            "imageGCHighThresholdPercent": 100,
            "imageGCLowThresholdPercent": 99,
            "syncFrequency": "10s",
            "nodeStatusUpdateFrequency": "5s",
            "shutdownGracePeriod": "0s",
            "maxPods": 110,
        }

    def _kube_proxy_config(self) -> dict[str, Any]:
        return {
            "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
            "kind": "KubeProxyConfiguration",
            "clientConnection": {"kubeconfig": str(self.root / "kube-proxy.kubeconfig")},
            "mode": "iptables",
            "hostnameOverride": NODE_NAME,
            "bindAddress": NODE_IP,
            "clusterCIDR": POD_SUBNET,
            "healthzBindAddress": "127.0.0.1:10256",
            "metricsBindAddress": "127.0.0.1:10249",
            # conntrack's table size is machine-wide: leave it; timeouts are the network namespace's own.
            "conntrack": {"maxPerCore": 0, "min": 0},
            # Without br_netfilter a pod reaching a Service backed by a pod on the same bridge needs this.
            "iptables": {"masqueradeAll": True, "syncPeriod": "5s", "minSyncPeriod": "0s"},
        }

    # ---- components ---------------------------------------------------------------------------------
    def components(self, component: Any) -> list[Background]:
        """containerd, kubelet and kube-proxy; `component(name, argv)` makes a Background of the cluster."""
        kube = tools.KUBERNETES
        containerd = component(
            "containerd",
            self.namespaces.argv(["containerd", f"--config={self.root / 'containerd' / 'config.toml'}"]),
        )
        kubelet = component(
            "kubelet",
            self.namespaces.argv(
                [
                    str(kube.binary("kubelet")),
                    f"--config={self.root / 'kubelet.yaml'}",
                    f"--kubeconfig={self.root / 'kubelet.kubeconfig'}",
                    f"--root-dir={self.root / 'kubelet'}",
                    f"--cert-dir={self.root / 'kubelet' / 'pki'}",
                    f"--hostname-override={NODE_NAME}",
                    f"--node-ip={NODE_IP}",
                    "--v=1",
                ]
            ),
        )
        proxy = component(
            "kube-proxy",
            self.namespaces.argv(
                [str(kube.binary("kube-proxy")), f"--config={self.root / 'kube-proxy.yaml'}", "--v=1"]
            ),
        )
        return [containerd, kubelet, proxy]

    # ---- containerd's shared image store --------------------------------------------------------------
    @contextlib.contextmanager
    def store_lock(self) -> Iterator[IO[str]]:
        """Held by containerd for as long as it runs (its descriptor is inherited), so two clusters never
        share the store at once; a crash releases it."""
        path = self.store_root.parent / f"{self.store_root.name}.lock"
        path.parent.mkdir(parents=True, exist_ok=True)
        lock = path.open("w")
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.close()
            raise NodeError(
                f"another local cluster's node is using the image store {self.store_root}: take it down first "
                "(`python -m e2e.cluster down --name NAME`; `ls /run/modelship` lists the clusters)"
            ) from None
        try:
            yield lock
        finally:
            lock.close()

    def ctr(self, *args: str, stdin: IO[bytes] | None = None, what: str = "ctr") -> str:
        argv = ["ctr", f"--address={self.socket}", f"--namespace={K8S_NAMESPACE}", *args]
        done = subprocess.run(argv, stdin=stdin, capture_output=True, check=False)
        if done.returncode != 0:
            raise NodeError(f"{what}: `{' '.join(argv)}` failed: {done.stderr.decode(errors='replace').strip()}")
        return done.stdout.decode(errors="replace")

    def remove_leftover_containers(self) -> None:
        """Containers a crashed cluster left in the shared store; kubelet would not know them."""
        for task in self.ctr("tasks", "list", "--quiet", what="listing tasks").split():
            with contextlib.suppress(NodeError):
                self.ctr("tasks", "kill", "--signal", "SIGKILL", task, what="killing a leftover task")
            with contextlib.suppress(NodeError):
                self.ctr("tasks", "delete", "--force", task, what="deleting a leftover task")
        containers = self.ctr("containers", "list", "--quiet", what="listing containers").split()
        if containers:
            self.ctr("containers", "delete", *containers, what="deleting leftover containers")

    def container_pid(self, container_id: str) -> int:
        """The host pid of a container's first process, from a Pod's `containerID` (containerd://ID)."""
        identifier = container_id.removeprefix("containerd://")
        bundle = self.root / "containerd" / "state" / "io.containerd.runtime.v2.task" / K8S_NAMESPACE / identifier
        return int((bundle / "init.pid").read_text())

    def image_present(self, tag: str) -> bool:
        return tag in self.ctr("images", "list", "--quiet", what="listing images").split()

    def _remove_older_tags(self, tag: str) -> None:
        """Older builds of the same image: containerd collects the layers only they used."""
        repository = tag.rsplit(":", 1)[0]
        listed = self.ctr("images", "list", "--quiet", what="listing images").split()
        stale = [name for name in listed if name.rsplit(":", 1)[0] == repository and name != tag]
        if stale:
            self.ctr("images", "remove", *stale, what="removing older images")

    def import_images(self, images: Images, say: Any) -> None:
        """Each image missing from containerd: pushed to an OCI layout (only new layers are written) and
        streamed into containerd from there."""
        for tag in (images.pause, *(getattr(images, name) for name in self.preload)):
            self.import_image(tag, say)

    def import_image(self, tag: str, say: Any) -> None:
        """One image from buildah's store into containerd's, unless containerd has it."""
        if self.image_present(tag):
            return
        started = time.monotonic()
        layout = store_root().parent / "oci" / tag.rsplit("/", 1)[-1].split(":", 1)[0]
        layout.parent.mkdir(parents=True, exist_ok=True)
        push = subprocess.run(
            ["buildah", "push", "--quiet", "--disable-compression", tag, f"oci:{layout}:{tag}"],
            capture_output=True,
            text=True,
            check=False,
        )
        if push.returncode != 0:
            raise NodeError(f"exporting {tag} for containerd failed: {push.stderr.strip()}")
        reader, writer = os.pipe()
        with os.fdopen(reader, "rb") as source, os.fdopen(writer, "wb") as sink:
            streamer = threading.Thread(target=_stream, args=(layout, tag, sink), daemon=True)
            streamer.start()
            self.ctr("images", "import", "--all-platforms", "-", stdin=source, what=f"importing {tag}")
            streamer.join(timeout=60)
        self._remove_older_tags(tag)
        say(f"imported {tag} into the node's containerd ({time.monotonic() - started:.0f}s)")


def layout_archive(layout: Path, tag: str, out: IO[bytes]) -> None:
    """An OCI archive of one image of an OCI layout: its manifest, config and layers only."""
    index = json.loads((layout / "index.json").read_text())
    named = "org.opencontainers.image.ref.name"
    manifests = [m for m in index["manifests"] if m.get("annotations", {}).get(named) == tag]
    if not manifests:
        raise NodeError(f"{tag} is not in the OCI layout {layout}")
    descriptor = manifests[-1]

    def blob(digest: str) -> Path:
        algorithm, value = digest.split(":", 1)
        return layout / "blobs" / algorithm / value

    manifest = json.loads(blob(descriptor["digest"]).read_text())
    digests = [descriptor["digest"], manifest["config"]["digest"], *(layer["digest"] for layer in manifest["layers"])]
    with tarfile.open(fileobj=out, mode="w|") as archive:
        for name, data in (
            ("oci-layout", (layout / "oci-layout").read_bytes()),
            ("index.json", json.dumps({"schemaVersion": 2, "manifests": [descriptor]}).encode()),
        ):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, _bytes_reader(data))
        for digest in dict.fromkeys(digests):
            archive.add(blob(digest), arcname=str(blob(digest).relative_to(layout)))


def _bytes_reader(data: bytes) -> IO[bytes]:
    return io.BytesIO(data)


def _stream(layout: Path, tag: str, sink: IO[bytes]) -> None:
    try:
        layout_archive(layout, tag, sink)
    except BrokenPipeError:  # ctr stopped reading; its own error is the one reported
        pass
    finally:
        with contextlib.suppress(BrokenPipeError):
            sink.close()
