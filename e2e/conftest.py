"""Fixtures for the end-to-end tests: one real control plane per session, a namespace per test.

Set MODELSHIP_E2E_CLUSTER=NAME to run against a cluster already brought up with
`python -m e2e.cluster up --name NAME` (it is left running afterwards).
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client, config

from e2e.cluster.controlplane import ClusterInfo, ControlPlane, state_root
from e2e.kube import Kubectl, wait_until

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def control_plane() -> Iterator[ControlPlane]:
    reuse = os.environ.get("MODELSHIP_E2E_CLUSTER")
    if reuse:
        plane = ControlPlane(reuse)
        plane.check()
        plane.update_images()
        plane.enter()
        yield plane
        return
    plane = ControlPlane(f"e2e-{os.getpid()}", scrape_interval="1s", backoff_seconds=2.0)
    plane.up()
    plane.enter()  # this thread, and what it starts, talk to the cluster from inside its network namespace
    try:
        yield plane
    finally:
        plane.down()


@pytest.fixture(scope="session")
def cluster(control_plane: ControlPlane) -> ClusterInfo:
    return ClusterInfo.load(control_plane.root)


@pytest.fixture(autouse=True)
def _components_alive(request: pytest.FixtureRequest) -> None:
    """Before each e2e test, fail at once (naming it) if a control plane component has died."""
    if "control_plane" in request.fixturenames:
        request.getfixturevalue("control_plane").check()


@pytest.fixture(scope="session")
def kubectl(cluster: ClusterInfo) -> Kubectl:
    return Kubectl(cluster.kubeconfig)


@pytest.fixture(scope="session")
def api(cluster: ClusterInfo) -> client.ApiClient:
    api_client: client.ApiClient = config.new_client_from_config(config_file=cluster.kubeconfig)
    return api_client


@pytest.fixture(scope="session")
def core(api: client.ApiClient) -> client.CoreV1Api:
    return client.CoreV1Api(api)


@pytest.fixture(scope="session")
def crds(kubectl: Kubectl) -> None:
    kubectl("apply", "--server-side", "-f", str(REPO / "crds"))
    kubectl.wait_established("modeldeployments.modelship.io")


@pytest.fixture
def namespace(request: pytest.FixtureRequest, core: client.CoreV1Api) -> Iterator[str]:
    base = re.sub(r"[^a-z0-9-]", "-", request.node.name.lower())[:40].strip("-")
    name = f"{base}-{uuid.uuid4().hex[:5]}"
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    wait_until(lambda: _has_default_account(core, name), "default ServiceAccount", 30)
    yield name
    core.delete_namespace(name)


def _has_default_account(core: client.CoreV1Api, namespace: str) -> bool:
    return any(a.metadata.name == "default" for a in core.list_namespaced_service_account(namespace).items)


@pytest.fixture(scope="session")
def state_dir() -> Path:
    return state_root()


@pytest.fixture(scope="session")
def custom(api: client.ApiClient) -> client.CustomObjectsApi:
    return client.CustomObjectsApi(api)


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Models the scenarios serve: the tiny GPT-2, and broken copies of it: position embeddings permuted
    (all of them, or only the far ones), and its tokenizer's ids swapped (the same vocabulary size)."""
    from e2e.modelship import readable_by_pods
    from model_runtime.tinymodel import build

    root = tmp_path_factory.mktemp("models")
    build(root / "tiny")
    build(root / "tiny-permuted", variant="permuted-positions")
    build(root / "tiny-far-permuted", variant="permuted-far-positions")
    build(root / "tiny-swapped-tokenizer", variant="swapped-tokenizer")
    readable_by_pods(root)
    return root


@pytest.fixture(scope="session")
def operator(cluster: ClusterInfo, kubectl: Kubectl, crds: None) -> str:
    """The operator, installed by the chart and running as a pod with the chart's ServiceAccount and RBAC;
    on a reused cluster upgraded to the images just built (a no-op when they are the same)."""
    from e2e.modelship import OPERATOR_NAMESPACE, install_operator

    install_operator(cluster, kubectl)
    return OPERATOR_NAMESPACE


@pytest.fixture
def deployed(
    request: pytest.FixtureRequest,
    operator: str,
    kubectl: Kubectl,
    core: client.CoreV1Api,
    custom: client.CustomObjectsApi,
    namespace: str,
    models_dir: Path,
) -> Any:
    """A ModelDeployment name in a fresh namespace that has the models volume."""
    from e2e.modelship import Deployed, model_volume

    model_volume(kubectl, namespace, models_dir)
    yield Deployed(kubectl, core, custom, namespace, "chat")
    kubectl("delete", "pv", f"models-{namespace}", "--wait=false", check=False)
