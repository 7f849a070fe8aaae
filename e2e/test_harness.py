"""The harness is a real cluster: Deployments become containers on the node's pod network, garbage
collection ends them, Services work through kube-proxy, Prometheus finds pods, the API server enforces the
CRD's CEL rules, crash loops show, volumes and securityContext are kubelet's and runc's, and taking a cluster
down (or finding one a crash left) removes every process, mount, namespace and cgroup it made."""

from __future__ import annotations

import contextlib
import functools
import ipaddress
import json
import os
import subprocess
import textwrap
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from e2e.cluster import images
from e2e.cluster.controlplane import ClusterInfo, ControlPlane
from e2e.cluster.namespaces import RUN_ROOT
from e2e.cluster.node import POD_GATEWAY, POD_SUBNET, Node, cgroup_directories, cgroup_processes
from e2e.cluster.processes import ComponentDied, pid_alive
from e2e.kube import Kubectl, wait_until

# Debian with python3, as root unless a pod says otherwise: the image the node has besides ModelShip's.
IMAGE = images.base_tag()
# The machine's own network namespace: this process's parent never entered the cluster's.
MACHINE = Path(f"/proc/{os.getppid()}")
HTTP_SERVER = ["python3", "-m", "http.server", "8000"]
POD_IP_ENV = [{"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}]


def deployment(name: str, replicas: int, command: list[str], **pod_spec: object) -> str:
    return yaml.safe_dump(
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": name},
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": {"app": name}},
                "template": {
                    "metadata": {"labels": {"app": name}},
                    "spec": {
                        "terminationGracePeriodSeconds": 5,
                        "containers": [
                            {
                                "name": "main",
                                "image": IMAGE,
                                "command": command,
                                "env": POD_IP_ENV,
                                "ports": [{"containerPort": 8000}],
                                "readinessProbe": {"httpGet": {"path": "/", "port": 8000}, "periodSeconds": 1},
                            }
                        ],
                        **pod_spec,
                    },
                },
            },
        }
    )


def pod_pids(core: client.CoreV1Api, node: Node, namespace: str, selector: str) -> dict[str, int]:
    pids: dict[str, int] = {}
    for pod in core.list_namespaced_pod(namespace, label_selector=selector).items:
        for status in pod.status.container_statuses or []:
            if status.container_id and status.state.running:
                pids[str(pod.status.pod_ip)] = node.container_pid(status.container_id)
    return pids


def http_get(url: str, timeout: float = 2) -> tuple[int, str]:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return response.status, response.read().decode()


def test_deployment_becomes_containers_and_gc_ends_them(
    kubectl: Kubectl, core: client.CoreV1Api, namespace: str, control_plane: ControlPlane
) -> None:
    node = control_plane.node
    kubectl.apply(deployment("web", 3, HTTP_SERVER), namespace)
    kubectl("rollout", "status", "deployment/web", "-n", namespace, "--timeout=60s")
    pids = wait_until(
        lambda: (p := pod_pids(core, node, namespace, "app=web")) and len(p) == 3 and p, "3 running pods", 30
    )
    assert all(ipaddress.ip_address(ip) in ipaddress.ip_network(POD_SUBNET) for ip in pids), pids
    host_network = (MACHINE / "ns" / "net").stat().st_ino
    for ip, pid in pids.items():
        assert pid_alive(pid)
        assert http_get(f"http://{ip}:8000/")[0] == 200
        # A container: its own network namespace, its cgroup under the cluster's root.
        assert Path(f"/proc/{pid}/ns/net").stat().st_ino != host_network
        assert f"/modelship-{control_plane.name}/kubepods" in Path(f"/proc/{pid}/cgroup").read_text()
    # The ReplicaSet exists and owns the pods: garbage collection, not the test, removes them.
    assert kubectl("get", "replicasets", "-n", namespace, "-o", "name").stdout.strip()
    kubectl("delete", "deployment", "web", "-n", namespace, "--wait=false")
    wait_until(
        lambda: not core.list_namespaced_pod(namespace, label_selector="app=web").items, "pods garbage-collected", 60
    )
    wait_until(lambda: not any(pid_alive(pid) for pid in pids.values()), "processes ended", 30)
    assert not kubectl("get", "replicasets", "-n", namespace, "-o", "name").stdout.strip()


def test_a_service_reaches_its_pods_through_kube_proxy(
    kubectl: Kubectl, core: client.CoreV1Api, namespace: str, cluster: ClusterInfo
) -> None:
    script = "mkdir -p /tmp/w && echo $HOSTNAME > /tmp/w/index.html && cd /tmp/w && exec python3 -m http.server 8000"
    manifest = yaml.safe_load(deployment("named", 2, ["sh", "-c", script], volumes=[{"name": "tmp", "emptyDir": {}}]))
    manifest["spec"]["template"]["spec"]["containers"][0]["volumeMounts"] = [{"name": "tmp", "mountPath": "/tmp"}]
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "named"},
        "spec": {"selector": {"app": "named"}, "ports": [{"port": 80, "targetPort": 8000}]},
    }
    kubectl.apply(yaml.safe_dump_all([manifest, service]), namespace)
    kubectl("rollout", "status", "deployment/named", "-n", namespace, "--timeout=60s")
    address = str(core.read_namespaced_service("named", namespace).spec.cluster_ip)
    pods = {str(p.metadata.name) for p in core.list_namespaced_pod(namespace, label_selector="app=named").items}
    answered = wait_until(
        lambda: (seen := {http_get(f"http://{address}/")[1].strip() for _ in range(20)}) == pods and seen,
        f"Service {address} to answer from both pods {sorted(pods)}",
        30,
    )
    assert answered == pods
    # The Service's address and the pods' exist only inside the cluster's network namespace.
    machine_addresses = (MACHINE / "net" / "fib_trie").read_text()
    assert address not in machine_addresses
    assert POD_GATEWAY not in machine_addresses
    machine_rules = subprocess.run(
        ["nsenter", f"--net={MACHINE / 'ns' / 'net'}", "iptables-save"], capture_output=True, text=True, check=True
    ).stdout
    assert "KUBE-SERVICES" not in machine_rules


def test_kubectl_logs_reads_the_container_output(kubectl: Kubectl, namespace: str) -> None:
    kubectl.apply(deployment("logs", 1, HTTP_SERVER), namespace)
    kubectl("rollout", "status", "deployment/logs", "-n", namespace, "--timeout=60s")
    logs = wait_until(lambda: kubectl("logs", "deployment/logs", "-n", namespace).stdout, "a log line", 20)
    assert "GET / HTTP/1.1" in logs  # the readiness probe's requests, as http.server logs them


def test_prometheus_discovers_an_annotated_pod(kubectl: Kubectl, namespace: str, cluster: ClusterInfo) -> None:
    script = (
        "mkdir -p /scratch/m && printf 'harness_probe_value{kind=\"e2e\"} 42\\n' > /scratch/m/metrics "
        "&& cd /scratch/m && exec python3 -m http.server 8000"
    )
    manifest = yaml.safe_load(
        deployment("metrics", 1, ["sh", "-c", script], volumes=[{"name": "scratch", "emptyDir": {}}])
    )
    template = manifest["spec"]["template"]
    template["metadata"]["annotations"] = {
        "prometheus.io/scrape": "true",
        "prometheus.io/port": "8000",
        "prometheus.io/path": "/metrics",
    }
    template["spec"]["containers"][0]["volumeMounts"] = [{"name": "scratch", "mountPath": "/scratch"}]
    kubectl.apply(yaml.safe_dump(manifest), namespace)
    kubectl("rollout", "status", "deployment/metrics", "-n", namespace, "--timeout=60s")
    query = urllib.parse.quote(f'harness_probe_value{{kubernetes_namespace="{namespace}"}}')

    def scraped() -> float | None:
        body = json.loads(http_get(f"{cluster.prometheus}/api/v1/query?query={query}")[1])
        results = body["data"]["result"]
        return float(results[0]["value"][1]) if results else None

    assert wait_until(scraped, "Prometheus to scrape the pod", 45) == 42.0


BAD_MODEL_DEPLOYMENT = """
apiVersion: modelship.io/v1alpha1
kind: ModelDeployment
metadata: {name: falling-steps}
spec:
  model: {uri: "pvc://models/tiny"}
  rollout:
    steps: [{weight: 50}, {weight: 10}]
"""


@pytest.mark.usefixtures("crds")
@pytest.mark.parametrize(
    ("change", "message"),
    [
        ("", "steps' weights must be strictly rising"),
        ("  traffic: {mode: gatewayAPI}\n", "traffic.gateway is required when traffic.mode is gatewayAPI"),
        ("    analysis: {interval: 1ms}\n", "interval must be at least 1s"),
    ],
)
def test_api_server_enforces_cel_rules(kubectl: Kubectl, namespace: str, change: str, message: str) -> None:
    manifest = BAD_MODEL_DEPLOYMENT + change
    if change:
        manifest = manifest.replace("    steps: [{weight: 50}, {weight: 10}]", "    steps: [{weight: 10}]")
    result = kubectl.apply(manifest, namespace, check=False)
    assert result.returncode != 0
    assert message in result.stderr
    assert not kubectl("get", "mdep", "-n", namespace, "-o", "name").stdout.strip()


@pytest.mark.usefixtures("crds")
def test_api_server_enforces_openapi_bounds(kubectl: Kubectl, namespace: str) -> None:
    manifest = (
        BAD_MODEL_DEPLOYMENT.replace("[{weight: 50}, {weight: 10}]", "[{weight: 10}]") + "  runtime: {replicas: 0}\n"
    )
    result = kubectl.apply(manifest, namespace, check=False)
    assert result.returncode != 0
    assert "spec.runtime.replicas" in result.stderr


def apply_shell_pod(kubectl: Kubectl, namespace: str, name: str, script: str, **pod_spec: Any) -> None:
    """A one-container pod running `sh -c script`, with extra pod-level spec fields."""
    container = {"name": "main", "image": IMAGE, "command": ["sh", "-c", script]}
    spec = {**pod_spec, "containers": [container]}
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": spec}
    kubectl.apply(yaml.safe_dump(pod), namespace)


def test_crash_loop_shows_restarts(kubectl: Kubectl, core: client.CoreV1Api, namespace: str) -> None:
    apply_shell_pod(kubectl, namespace, "crasher", "echo dying; exit 3")

    def looping() -> client.V1ContainerStatus | None:
        status = core.read_namespaced_pod("crasher", namespace).status.container_statuses[0]
        return status if status.restart_count >= 2 and status.state.waiting else None

    status = wait_until(looping, "two restarts and a back-off", 60)
    assert status.state.waiting.reason == "CrashLoopBackOff"
    assert status.last_state.terminated.exit_code == 3
    assert "dying" in kubectl("logs", "crasher", "-n", namespace).stdout


def test_run_as_non_root_without_a_user_is_refused(kubectl: Kubectl, core: client.CoreV1Api, namespace: str) -> None:
    """As the kubelet does: a container that would run as root under runAsNonRoot never starts."""
    apply_shell_pod(kubectl, namespace, "rooted", "echo ran", securityContext={"runAsNonRoot": True})

    def refused() -> client.V1ContainerStateWaiting | None:
        statuses = core.read_namespaced_pod("rooted", namespace).status.container_statuses or []
        waiting = statuses[0].state.waiting if statuses else None
        return waiting if waiting and waiting.reason == "CreateContainerConfigError" else None

    waiting = wait_until(refused, "the container to be refused", 30)
    assert "runAsNonRoot and image will run as root" in waiting.message
    assert core.read_namespaced_pod("rooted", namespace).status.container_statuses[0].restart_count == 0


def test_volumes_user_and_service_account_as_a_container_sees_them(
    kubectl: Kubectl, core: client.CoreV1Api, namespace: str, tmp_path: Path
) -> None:
    models = tmp_path / "models"
    (models / "tiny").mkdir(parents=True)
    (models / "tiny" / "config.json").write_text('{"model_type": "gpt2"}')
    os.chmod(tmp_path, 0o755)
    probe = textwrap.dedent("""
        import json, os, ssl, urllib.request, urllib.error
        sa = "/var/run/secrets/kubernetes.io/serviceaccount"
        out = {"config": open("/etc/app/greeting").read(), "secret": open("/etc/secret/password").read(),
               "model": open("/models/tiny/config.json").read(), "namespace": open(sa + "/namespace").read()}
        open("/scratch/written", "w").write("ok")
        out["user"] = [os.getuid(), os.getgid(), sorted(os.getgroups()), os.environ["HOME"]]
        out["no_new_privs"] = [l.split()[1] for l in open("/proc/self/status") if l.startswith("NoNewPrivs")]
        try:
            open("/usr/modelship-should-not-write", "w")
            out["rootfs"] = "writable"
        except OSError as error:
            out["rootfs"] = "read-only" if error.errno == 30 else str(error)
        ctx = ssl.create_default_context(cafile=sa + "/ca.crt")
        url = "https://%s:%s/api/v1/namespaces/%s/pods" % (os.environ["KUBERNETES_SERVICE_HOST"],
              os.environ["KUBERNETES_SERVICE_PORT"], out["namespace"])
        request = urllib.request.Request(url, headers={"Authorization": "Bearer " + open(sa + "/token").read()})
        try:
            urllib.request.urlopen(request, context=ctx)
            out["api"] = 200
        except urllib.error.HTTPError as error:
            out["api"] = error.code
        print("RESULT " + json.dumps(out), flush=True)
    """)
    kubectl.apply(
        yaml.safe_dump_all(
            [
                {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "app"}, "data": {"greeting": "hello"}},
                {
                    "apiVersion": "v1",
                    "kind": "Secret",
                    "metadata": {"name": "creds"},
                    "stringData": {"password": "s3cret"},
                },
                {
                    "apiVersion": "v1",
                    "kind": "PersistentVolume",
                    "metadata": {"name": f"models-{namespace}"},
                    "spec": {
                        "capacity": {"storage": "1Gi"},
                        "accessModes": ["ReadOnlyMany"],
                        "storageClassName": "",
                        "hostPath": {"path": str(models)},
                        "claimRef": {"namespace": namespace, "name": "models"},
                    },
                },
                {
                    "apiVersion": "v1",
                    "kind": "PersistentVolumeClaim",
                    "metadata": {"name": "models"},
                    "spec": {
                        "accessModes": ["ReadOnlyMany"],
                        "storageClassName": "",
                        "resources": {"requests": {"storage": "1Gi"}},
                    },
                },
                {
                    "apiVersion": "v1",
                    "kind": "Pod",
                    "metadata": {"name": "reader"},
                    "spec": {
                        "restartPolicy": "Never",
                        "securityContext": {"runAsNonRoot": True, "fsGroup": 2000},
                        "containers": [
                            {
                                "name": "main",
                                "image": IMAGE,
                                "command": ["python3", "-c", probe],
                                "securityContext": {
                                    "readOnlyRootFilesystem": True,
                                    "runAsUser": 1000,
                                    "runAsGroup": 3000,
                                    "allowPrivilegeEscalation": False,
                                },
                                "volumeMounts": [
                                    {"name": "config", "mountPath": "/etc/app"},
                                    {"name": "secret", "mountPath": "/etc/secret"},
                                    {"name": "models", "mountPath": "/models", "readOnly": True},
                                    {"name": "scratch", "mountPath": "/scratch"},
                                ],
                            }
                        ],
                        "volumes": [
                            {"name": "config", "configMap": {"name": "app"}},
                            {"name": "secret", "secret": {"secretName": "creds"}},
                            {"name": "models", "persistentVolumeClaim": {"claimName": "models", "readOnly": True}},
                            {"name": "scratch", "emptyDir": {}},
                        ],
                    },
                },
            ]
        ),
        namespace,
    )
    try:
        wait_until(
            lambda: core.read_namespaced_pod("reader", namespace).status.phase == "Succeeded",
            "the reader pod to finish",
            60,
        )
        line = next(
            x for x in kubectl("logs", "reader", "-n", namespace).stdout.splitlines() if x.startswith("RESULT ")
        )
        seen = json.loads(line.removeprefix("RESULT "))
        assert seen["config"] == "hello"
        assert seen["secret"] == "s3cret"
        assert seen["model"] == '{"model_type": "gpt2"}'
        assert seen["namespace"] == namespace
        assert seen["rootfs"] == "read-only"
        # runc lists the primary group among the supplementary ones, next to fsGroup.
        assert seen["user"] == [1000, 3000, [2000, 3000], "/"]
        assert seen["no_new_privs"] == ["1"]
        # Authenticated (a valid, pod-bound token) but not authorized (the default account has no role).
        assert seen["api"] == 403
    finally:
        kubectl("delete", "pv", f"models-{namespace}", "--wait=false", check=False)


def test_deletion_sends_sigterm_then_sigkill(
    kubectl: Kubectl, core: client.CoreV1Api, namespace: str, control_plane: ControlPlane
) -> None:
    polite = textwrap.dedent("""
        import signal, sys, time
        signal.signal(signal.SIGTERM, lambda *a: (print("got SIGTERM", flush=True), sys.exit(0)))
        print("up", flush=True)
        time.sleep(600)
    """)
    stubborn = (
        "import signal,time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\nprint('up', flush=True)\ntime.sleep(600)"
    )
    for name, code in (("polite", polite), ("stubborn", stubborn)):
        kubectl.apply(
            yaml.safe_dump(
                {
                    "apiVersion": "v1",
                    "kind": "Pod",
                    "metadata": {"name": name},
                    "spec": {
                        "terminationGracePeriodSeconds": 3,
                        "containers": [{"name": "main", "image": IMAGE, "command": ["python3", "-c", code]}],
                    },
                }
            ),
            namespace,
        )

    def running(name: str) -> client.V1ContainerStatus | None:
        if kubectl("logs", name, "-n", namespace).stdout.strip() != "up":
            return None
        return core.read_namespaced_pod(name, namespace).status.container_statuses[0]

    pids = {}
    for name in ("polite", "stubborn"):
        status = wait_until(functools.partial(running, name), f"{name} running", 30)
        pids[name] = control_plane.node.container_pid(status.container_id)
    started = time.monotonic()
    kubectl("delete", "pod", "polite", "stubborn", "-n", namespace, "--wait=true", timeout=30)
    took = time.monotonic() - started
    assert not pid_alive(pids["polite"])
    assert not pid_alive(pids["stubborn"])
    assert took >= 2.5, f"the stubborn pod was killed before its 3s grace period ({took:.1f}s)"
    assert took < 15


def _traces(name: str, root: Path) -> dict[str, object]:
    """What a cluster could leave on the machine: processes, mounts, namespaces, cgroups, state."""
    processes = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if str(root).encode() in (entry / "cmdline").read_bytes():
                    processes.append(entry.name)
    mounts = [line for line in Path("/proc/self/mounts").read_text().splitlines() if str(root) in line]
    return {
        "processes": processes,
        "mounts": mounts,
        "namespaces": (RUN_ROOT / name).exists(),
        "cgroups": [str(d) for d in cgroup_directories(name) if d.exists()],
        "state": root.exists(),
    }


NOTHING = {"processes": [], "mounts": [], "namespaces": False, "cgroups": [], "state": False}


@contextlib.contextmanager
def second_cluster(prefix: str, suite: ControlPlane) -> Iterator[ControlPlane]:
    """A cluster beside the suite's, running one web pod; this thread is back in the suite's network
    namespace afterwards. Taking it down is the caller's part."""
    plane = ControlPlane(f"{prefix}-{os.getpid()}", backoff_seconds=2.0)
    info = plane.up(private_store=("base",))
    try:
        plane.enter()
        kube = Kubectl(info.kubeconfig)
        kube.apply(deployment("web", 1, HTTP_SERVER))
        kube("rollout", "status", "deployment/web", "--timeout=60s")
        yield plane
    finally:
        suite.enter()


def test_a_dead_component_is_reported_and_down_leaves_nothing(control_plane: ControlPlane) -> None:
    with second_cluster("e2e-death", control_plane) as plane:
        try:
            prometheus_pid = int((plane.pids / "prometheus.pid").read_text())
            os.kill(prometheus_pid, 9)
            wait_until(lambda: not pid_alive(prometheus_pid), "prometheus to die", 10)
            with pytest.raises(ComponentDied, match="prometheus is not running") as died:
                plane.check()
            assert "Last lines of" in str(died.value)
        finally:
            plane.down()
    assert _traces(plane.name, plane.root) == NOTHING


def test_a_crashed_cluster_is_cleaned_up_by_the_next_bring_up(control_plane: ControlPlane) -> None:
    """Every component and container SIGKILLed, as a machine crash or an OOM kill of the harness would."""
    with second_cluster("e2e-crash", control_plane) as crashed:
        pass
    container = [p for p in cgroup_directories(crashed.name)[0].rglob("cgroup.procs") if p.read_text().strip()]
    assert container, "the container runs in the crashed cluster's cgroup"
    for pid in {*crashed.namespaces.processes(), *cgroup_processes(crashed.name)}:
        os.kill(pid, 9)
    assert _traces(crashed.name, crashed.root) != NOTHING
    survivor = ControlPlane(f"e2e-after-{os.getpid()}", backoff_seconds=2.0)
    survivor.up(private_store=("base",))
    try:
        assert _traces(crashed.name, crashed.root) == NOTHING
    finally:
        survivor.down()
