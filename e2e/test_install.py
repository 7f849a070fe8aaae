"""Installing and driving ModelShip as users do: Helm install, upgrade and uninstall on a fresh control
plane (nothing orphaned), rendered manifests accepted by the API server, the GitOps path (kubectl apply
of crds/ and examples/), and the CLI against a live rollout."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import yaml
from kubernetes import client, config

from e2e.cluster import tools
from e2e.cluster.controlplane import ClusterInfo, ControlPlane
from e2e.kube import Kubectl, wait_until
from e2e.modelship import BASE_SPEC, CHART, REPO, Deployed, chart_values, helm, merged, model_volume
from e2e.scenarios import healthy, new_revision

KUBE_VERSION = tools.KUBERNETES_VERSION.removeprefix("v")


def _chart_objects(kubectl: Kubectl, release: str) -> list[str]:
    kinds = "deployments,services,serviceaccounts,configmaps,roles,rolebindings,clusterroles,clusterrolebindings"
    out = kubectl("get", kinds, "-A", "-l", f"app.kubernetes.io/instance={release}", "-o", "name").stdout
    return [line for line in out.splitlines() if line]


def test_helm_install_upgrade_uninstall_leave_nothing_behind(models_dir: Path, control_plane: ControlPlane) -> None:
    plane = ControlPlane(f"e2e-helm-{os.getpid()}", backoff_seconds=2.0)
    info = plane.up(private_store=("runtime", "operator"))
    try:
        plane.enter()
        kubectl = Kubectl(info.kubeconfig)
        kubectl("create", "namespace", "apps")
        # Namespaced RBAC: the operator may act only in "apps".
        helm(
            "install",
            "ms",
            str(CHART),
            "--namespace",
            "modelship-system",
            "--create-namespace",
            "--wait",
            "--timeout",
            "120s",
            *chart_values(info, **{"rbac.scope": "namespace", "watchNamespaces": "{apps}"}),
            kubeconfig=info.kubeconfig,
        )
        assert "modeldeployments.modelship.io" in kubectl("get", "crd", "-o", "name").stdout  # from crds/
        api = config.new_client_from_config(config_file=info.kubeconfig)
        wait_until(lambda: kubectl("get", "sa", "default", "-n", "apps", check=False).returncode == 0, "SA", 30)
        model_volume(kubectl, "apps", models_dir)
        deployed = Deployed(kubectl, client.CoreV1Api(api), client.CustomObjectsApi(api), "apps", "chat")
        stable = healthy(deployed, merged(BASE_SPEC, {"traffic": {"mirrorPercent": 0}}))
        children = deployed.deployments()
        helm(
            "upgrade",
            "ms",
            str(CHART),
            "--namespace",
            "modelship-system",
            "--wait",
            "--timeout",
            "120s",
            *chart_values(
                info, **{"rbac.scope": "namespace", "watchNamespaces": "{apps}", "scaleDownDelaySeconds": "7"}
            ),
            kubeconfig=info.kubeconfig,
        )
        kubectl("rollout", "status", "deployment/ms-modelship", "-n", "modelship-system", "--timeout=120s")
        env = kubectl(
            "get",
            "deployment",
            "ms-modelship",
            "-n",
            "modelship-system",
            "-o",
            "jsonpath={.spec.template.spec.containers[0].env}",
        ).stdout
        assert '"value":"7"' in env.replace(" ", "")
        time.sleep(3)
        assert deployed.deployments() == children, "an operator upgrade touches no model pods"
        assert deployed.status["stableRevision"] == stable
        assert deployed.status["phase"] == "Healthy"
        helm("uninstall", "ms", "--namespace", "modelship-system", "--wait", kubeconfig=info.kubeconfig)
        wait_until(lambda: not _chart_objects(kubectl, "ms"), "chart objects removed", 60)
        # Documented policy: Helm never deletes CRDs (that would delete every ModelDeployment).
        assert "modeldeployments.modelship.io" in kubectl("get", "crd", "-o", "name").stdout
        # The model keeps serving without the operator, and deleting it needs no operator (no finalizer).
        assert deployed.deployments() == children
        kubectl("delete", "mdep", "chat", "-n", "apps", "--timeout=30s")
        wait_until(lambda: not deployed.deployments(), "children garbage-collected", 60)
        wait_until(lambda: not deployed.pods() and not deployed.pods("router"), "pods gone", 60)
    finally:
        control_plane.enter()
        plane.down()


def test_rendered_manifests_are_accepted_by_the_api_server(kubectl: Kubectl) -> None:
    options = [
        "--set",
        "rbac.scope=namespace",
        "--set",
        "watchNamespaces={default}",
        "--set",
        "grafanaDashboard.enabled=true",
        "--set",
        "networkPolicy.enabled=true",
    ]
    for values in ([], options):
        rendered = subprocess.run(
            [
                str(tools.HELM.binary("helm")),
                "template",
                "ms",
                str(CHART),
                "--namespace",
                "default",
                "--kube-version",
                KUBE_VERSION,
                *values,
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        result = kubectl("apply", "--dry-run=server", "--validate=strict", "-f", "-", stdin=rendered, check=False)
        assert result.returncode == 0, result.stderr
    # Monitoring objects need the Prometheus Operator's CRDs, which this cluster does not have; their
    # rendering is checked in tests/test_chart.py (promtool for the rules).


def test_gitops_path_kubectl_apply_crds_then_examples(kubectl: Kubectl, namespace: str, operator: str) -> None:
    kubectl("apply", "--server-side", "-f", str(REPO / "crds"))
    result = kubectl("apply", "-n", namespace, "-f", str(REPO / "examples"), check=False)
    assert result.returncode == 0, result.stderr
    names = set(kubectl("get", "mdep", "-n", namespace, "-o", "name").stdout.split())
    examples = sorted((REPO / "examples").glob("*.yaml"))
    assert len(examples) >= 4
    assert names == {
        f"modeldeployment.modelship.io/{yaml.safe_load(p.read_text())['metadata']['name']}" for p in examples
    }
    # The operator picks them up: each gets a status (their models are not on this cluster, so the pods wait).
    wait_until(
        lambda: all(
            s
            for s in kubectl(
                "get", "mdep", "-n", namespace, "-o", 'jsonpath={range .items[*]}{.status.phase}{"\\n"}{end}'
            ).stdout.splitlines()
        ),
        "statuses",
        60,
    )
    gpu_pods = kubectl(
        "get",
        "pods",
        "-n",
        namespace,
        "-l",
        "modelship.io/model-deployment=smollm2-gpu",
        "-o",
        "jsonpath={.items[*].status.conditions[0].reason}",
    ).stdout
    assert "Unschedulable" in gpu_pods  # no GPU on this node: the scheduler's answer, as on a real cluster
    kubectl("delete", "-n", namespace, "-f", str(REPO / "examples"), "--timeout=60s")


def cli(cluster: ClusterInfo, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "model_operator.cli", "--kubeconfig", cluster.kubeconfig, *args],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )


def test_cli_drives_a_rollout(deployed: Deployed, cluster: ClusterInfo) -> None:
    spec = merged(BASE_SPEC, {"rollout": {"steps": [{"weight": 20, "pause": "1h"}, {"weight": 50, "pause": "1h"}]}})
    healthy(deployed, spec)
    namespace = ["-n", deployed.namespace]
    refused = cli(cluster, "promote", "chat", *namespace)
    assert refused.returncode == 1
    assert "no canary in progress" in refused.stderr
    with deployed.load(rate=15):
        new_revision(deployed)
        deployed.wait(lambda s: s.get("canaryWeight") == 20, "canary at 20%", 90)
        table = cli(cluster, "status", *namespace)
        assert table.returncode == 0
        assert "chat" in table.stdout
        assert "20%" in table.stdout
        assert cli(cluster, "pause", "chat", *namespace).returncode == 0
        deployed.wait(lambda s: s.get("phase") == "Paused", "paused", 30)
        assert "already paused" in cli(cluster, "pause", "chat", *namespace).stderr
        assert cli(cluster, "resume", "chat", *namespace).returncode == 0
        deployed.wait(lambda s: s.get("phase") == "Progressing", "resumed", 30)
        detail = cli(cluster, "status", "chat", *namespace)
        assert "Last analysis" in detail.stdout or "waiting" in detail.stdout
        assert cli(cluster, "abort", "chat", *namespace).returncode == 0
        deployed.wait(lambda s: s.get("phase") == "Degraded", "aborted", 30)
    history = cli(cluster, "history", "chat", *namespace)
    assert history.stdout.splitlines()[1].split()[1] == "Aborted"
    assert cli(cluster, "retry", "chat", *namespace).returncode == 0
    deployed.wait(lambda s: s.get("canaryRevision"), "retried", 30)
    missing = cli(cluster, "status", "nope", *namespace)
    assert missing.returncode == 1
    assert "no ModelDeployment 'nope'" in missing.stderr
    assert (
        yaml.safe_load(deployed.kubectl("get", "mdep", "chat", *namespace, "-o", "yaml").stdout)["metadata"]
        .get("annotations", {})
        .get("modelship.io/action")
        is None
    ), "actions are consumed"
