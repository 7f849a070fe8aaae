"""Helpers for the scenarios: the operator installed from the chart, models on a PersistentVolume, and one
ModelDeployment under test (apply, patch, wait, find its pods, send it load)."""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client, config

from e2e.cluster import tools
from e2e.cluster.controlplane import ClusterInfo
from e2e.diagnose import explain_namespace, explainer
from e2e.kube import Kubectl, wait_until
from e2e.load import LoadGenerator

REPO = Path(__file__).resolve().parents[1]
CHART = REPO / "charts" / "modelship"
OPERATOR_NAMESPACE = "modelship-system"
RELEASE = "modelship"

# Fast rollouts for tests: analysis every 2s, short steps, small evidence requirements.
ROLLOUT_ENDINGS = ("Promoted", "RolledBack", "Aborted")
BASE_SPEC: dict[str, Any] = {
    "model": {"uri": "pvc://models/tiny"},
    "runtime": {
        "replicas": 1,
        "resources": {"requests": {"cpu": "100m"}, "limits": {"cpu": "1"}},
        "batching": {"maxBatchSize": 8, "maxBatchWaitMs": 2},
    },
    "traffic": {"mode": "router", "mirrorPercent": 25},
    "rollout": {
        "steps": [{"weight": 20, "pause": "4s"}, {"weight": 50, "pause": "4s"}],
        "analysis": {
            "interval": "2s",
            "minRequests": 30,
            "noDataTimeout": "10m",
            # The default 10 ms noise floor: a fresh pod's first requests, tens of ms slower than a warm
            # stable's on 2 shared cores, are not significant evidence (they once failed the old method).
            "thresholds": {"p99LatencySeconds": 0.5, "drift": 0.08},
        },
        "progressDeadlineSeconds": 60,
        "abortScaleDownDelaySeconds": 30,
    },
}
PROMPT = {"prompt": "the quick brown fox jumps over the lazy dog", "max_tokens": 4, "temperature": 0}


def helm(*args: str, kubeconfig: str, check: bool = True) -> Any:
    import subprocess

    result = subprocess.run(
        [str(tools.HELM.binary("helm")), f"--kubeconfig={kubeconfig}", *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    if check and result.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} failed: {result.stderr.strip()}")
    return result


def chart_values(cluster: ClusterInfo, **extra: str) -> list[str]:
    """Only what a user sets too: the images (as the cluster's node has them) and where Prometheus is."""
    repository, tag = cluster.operator_image.rsplit(":", 1)
    values = {
        "image.repository": repository,
        "image.tag": tag,
        "runtime.image": cluster.runtime_image,
        "prometheus.url": cluster.prometheus,
        "scaleDownDelaySeconds": "5",
        "logLevel": "INFO",
        **extra,
    }
    return [arg for key, value in values.items() for arg in ("--set", f"{key}={value}")]


def install_operator(
    cluster: ClusterInfo, kubectl: Kubectl, namespace: str = OPERATOR_NAMESPACE, release: str = RELEASE, **extra: str
) -> None:
    result = helm(
        "upgrade",
        "--install",
        release,
        str(CHART),
        "--namespace",
        namespace,
        "--create-namespace",
        "--wait",
        "--timeout",
        "120s",
        *chart_values(cluster, **extra),
        kubeconfig=cluster.kubeconfig,
        check=False,
    )
    if result.returncode != 0:
        # helm says only "context deadline exceeded": say which object was not ready, and why.
        api = config.new_client_from_config(config_file=cluster.kubeconfig)
        raise AssertionError(
            f"helm install {release} failed: {result.stderr.strip()}\n{explain_namespace(api, namespace)}"
        )
    kubectl("rollout", "status", f"deployment/{release}", "-n", namespace, "--timeout=120s")


def model_volume(kubectl: Kubectl, namespace: str, directory: Path) -> None:
    """A PersistentVolume over a local directory, bound to claim `models` in `namespace`."""
    kubectl.apply(
        yaml.safe_dump_all(
            [
                {
                    "apiVersion": "v1",
                    "kind": "PersistentVolume",
                    "metadata": {"name": f"models-{namespace}"},
                    "spec": {
                        "capacity": {"storage": "1Gi"},
                        "accessModes": ["ReadOnlyMany"],
                        "storageClassName": "",
                        "persistentVolumeReclaimPolicy": "Retain",
                        "hostPath": {"path": str(directory)},
                        "claimRef": {"namespace": namespace, "name": "models"},
                    },
                },
                {
                    "apiVersion": "v1",
                    "kind": "PersistentVolumeClaim",
                    "metadata": {"name": "models", "namespace": namespace},
                    "spec": {
                        "accessModes": ["ReadOnlyMany"],
                        "storageClassName": "",
                        "resources": {"requests": {"storage": "1Gi"}},
                    },
                },
            ]
        )
    )


def readable_by_pods(root: Path) -> None:
    """Model folders a hostPath volume serves to pods running as another user (uid 1000) than the builder."""
    for path in [root, *root.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)


def merged(base: dict[str, Any], change: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in change.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merged(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def rollout_ended(status: dict[str, Any], since: dict[str, Any] | None) -> bool:
    """Whether the newest history entry is a rollout's end recorded after `since`. The history keeps only
    the last entries, so a new one is told by its content, not by the count."""
    history = status.get("history") or []
    return bool(history) and history[-1] != since and history[-1]["result"] in ROLLOUT_ENDINGS


class Deployed:
    """One ModelDeployment under test."""

    def __init__(
        self, kubectl: Kubectl, core: client.CoreV1Api, custom: client.CustomObjectsApi, namespace: str, name: str
    ) -> None:
        self.kubectl, self.core, self.custom = kubectl, core, custom
        self.namespace, self.name = namespace, name

    def apply(self, spec: dict[str, Any]) -> None:
        self.kubectl.apply(
            yaml.safe_dump(
                {
                    "apiVersion": "modelship.io/v1alpha1",
                    "kind": "ModelDeployment",
                    "metadata": {"name": self.name, "namespace": self.namespace},
                    "spec": spec,
                }
            )
        )

    def patch(self, change: dict[str, Any]) -> None:
        self.kubectl(
            "patch", "mdep", self.name, "-n", self.namespace, "--type=merge", "-p", json.dumps({"spec": change})
        )

    def action(self, action: str) -> None:
        self.kubectl(
            "annotate", "mdep", self.name, "-n", self.namespace, f"modelship.io/action={action}", "--overwrite"
        )

    def get(self) -> dict[str, Any]:
        body: dict[str, Any] = self.custom.get_namespaced_custom_object(  # type: ignore[assignment]
            "modelship.io", "v1alpha1", self.namespace, "modeldeployments", self.name
        )
        return body

    @property
    def status(self) -> dict[str, Any]:
        return dict(self.get().get("status") or {})

    def condition(self, kind: str) -> dict[str, Any]:
        return next((c for c in self.status.get("conditions", []) if c["type"] == kind), {})

    def wait(self, predicate: Any, what: str, timeout: float = 120) -> dict[str, Any]:
        def check() -> dict[str, Any] | None:
            status = self.status
            return status if predicate(status) else None

        result: dict[str, Any] = wait_until(
            check,
            f"{self.namespace}/{self.name}: {what}",
            timeout,
            interval=0.5,
            explain=self.explain,
        )
        return result

    def explain(self) -> str:
        """The resource's own phase and message, then what is not ready in its namespace and the operator's."""
        status = self.status
        head = (
            f"modeldeployment {self.namespace}/{self.name}: phase {status.get('phase', '-')}, "
            f"message {status.get('message', '-')!r}"
        )
        return head + "\n" + explainer(self.core.api_client, self.namespace, OPERATOR_NAMESPACE)()

    def wait_rollout_end(self, since: dict[str, Any] | None, what: str, timeout: float) -> dict[str, Any]:
        """The history entry of the rollout that ends after `since` (the newest entry when it began)."""
        entry: dict[str, Any] = self.wait(lambda s: rollout_ended(s, since), what, timeout)["history"][-1]
        return entry

    def last_entry(self) -> dict[str, Any] | None:
        history = self.history()
        return history[-1] if history else None

    def wait_phase(self, phase: str, timeout: float = 120) -> dict[str, Any]:
        return self.wait(
            lambda s: s.get("phase") == phase and s.get("observedGeneration") == self.get()["metadata"]["generation"],
            f"phase {phase}",
            timeout,
        )

    def pods(self, component: str = "model") -> list[Any]:
        selector = f"modelship.io/model-deployment={self.name},app.kubernetes.io/component={component}"
        return list(self.core.list_namespaced_pod(self.namespace, label_selector=selector).items)

    def ready_addresses(self, component: str) -> list[str]:
        return [
            f"http://{p.status.pod_ip}:8080"
            for p in self.pods(component)
            if p.status.pod_ip
            and not p.metadata.deletion_timestamp
            and any(c.type == "Ready" and c.status == "True" for c in p.status.conditions or [])
        ]

    def load(self, rate: float = 25.0, component: str = "router", **body: Any) -> LoadGenerator:
        """Steady requests to the router pods (as kube-proxy would send Service traffic to them)."""
        return LoadGenerator(
            lambda: self.ready_addresses(component), rate=rate, body={"model": self.name, **PROMPT, **body}
        )

    def events(self) -> list[str]:
        items = self.core.list_namespaced_event(self.namespace, field_selector=f"involvedObject.name={self.name}").items
        ordered = sorted(items, key=lambda e: str(e.metadata.creation_timestamp))
        return [str(e.reason) for e in ordered]

    def deployments(self) -> dict[str, str]:
        """Deployment name -> uid, for checking that nothing is created twice."""
        apps = client.AppsV1Api(self.core.api_client)
        items = apps.list_namespaced_deployment(
            self.namespace, label_selector=f"modelship.io/model-deployment={self.name}"
        ).items
        return {str(d.metadata.name): str(d.metadata.uid) for d in items}

    def history(self) -> list[dict[str, Any]]:
        return list(self.status.get("history", []))


def settle(seconds: float) -> None:
    time.sleep(seconds)
