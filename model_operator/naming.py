"""Names and labels of everything the operator creates for a ModelDeployment."""

from __future__ import annotations

from model_runtime.contract import (
    COMPONENT_MODEL,
    COMPONENT_ROUTER,
    LABEL_COMPONENT,
    LABEL_MODEL_DEPLOYMENT,
    LABEL_REVISION,
    ROUTING_KEY,
    RUNTIME_PORT,
)

ACTION_ANNOTATION = "modelship.io/action"
SERVICE_PORT = 80
__all__ = [
    "COMPONENT_MODEL",
    "COMPONENT_ROUTER",
    "LABEL_COMPONENT",
    "LABEL_MODEL_DEPLOYMENT",
    "LABEL_REVISION",
    "ROUTING_KEY",
    "RUNTIME_PORT",
]


def revision_name(name: str, revision: str) -> str:
    """The Deployment and Service of one revision: NAME-REV."""
    return f"{name}-{revision}"


def router_name(name: str) -> str:
    return f"{name}-router"


def routing_config_name(name: str) -> str:
    return f"{name}-routing"


def common_labels(name: str, component: str) -> dict[str, str]:
    # No app.kubernetes.io/instance: Argo CD tracks its applications by that label, and children carrying
    # the application's name would be shown as (and pruned as) part of the Git source.
    return {
        "app.kubernetes.io/name": "modelship",
        LABEL_COMPONENT: component,
        "app.kubernetes.io/managed-by": "modelship",
        "app.kubernetes.io/part-of": "modelship",
        LABEL_MODEL_DEPLOYMENT: name,
    }


def revision_labels(name: str, revision: str) -> dict[str, str]:
    return common_labels(name, COMPONENT_MODEL) | {LABEL_REVISION: revision}


def revision_selector(name: str, revision: str) -> dict[str, str]:
    return {LABEL_MODEL_DEPLOYMENT: name, LABEL_COMPONENT: COMPONENT_MODEL, LABEL_REVISION: revision}


def model_pods_selector(name: str) -> dict[str, str]:
    """Every model pod of a ModelDeployment, whatever its revision (replicas mode's Service)."""
    return {LABEL_MODEL_DEPLOYMENT: name, LABEL_COMPONENT: COMPONENT_MODEL}


def router_selector(name: str) -> dict[str, str]:
    return {LABEL_MODEL_DEPLOYMENT: name, LABEL_COMPONENT: COMPONENT_ROUTER}


COMPONENT_ENDPOINT_PICKER = "endpoint-picker"


def endpoint_picker_name(name: str, revision: str) -> str:
    """The Deployment and Service of one revision's endpoint picker (gatewayAPI mode with InferencePools)."""
    return f"{revision_name(name, revision)}-epp"
