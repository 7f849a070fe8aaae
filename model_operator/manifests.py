"""Every child object a ModelDeployment needs, built as plain dicts by pure functions (build first,
apply second). The handler adds owner references and the namespace, then applies them."""

from __future__ import annotations

import json
from typing import Any

from model_runtime.contract import SERVICE_PORT_NAME, RoutingConfig, scrape_annotations

from .api.spec import EndpointPicker, InferencePoolSettings, ModelDeploymentSpec
from .naming import (
    COMPONENT_ENDPOINT_PICKER,
    COMPONENT_ROUTER,
    LABEL_COMPONENT,
    LABEL_MODEL_DEPLOYMENT,
    LABEL_REVISION,
    ROUTING_KEY,
    RUNTIME_PORT,
    SERVICE_PORT,
    common_labels,
    endpoint_picker_name,
    model_pods_selector,
    revision_labels,
    revision_name,
    revision_selector,
    router_name,
    router_selector,
    routing_config_name,
)
from .servers import SHUTDOWN_SECONDS, WRITABLE, identity_env, secret_env, server_container
from .settings import OperatorSettings

MODELS_MOUNT = "/models"
INFERENCE_GROUP = "inference.networking.k8s.io"
# The ports the GIE reference picker and its Helm chart use: ext-proc gRPC for the Gateway, gRPC health.
PICKER_GRPC_PORT = 9002
PICKER_HEALTH_PORT = 9003
PICKER_HEALTH_SERVICE = "inference-extension"
# How long a model pod may take to load and warm up before kubelet restarts it: large models take minutes.
MODEL_STARTUP_SECONDS = 900
GPU_RESOURCE = "nvidia.com/gpu"


def model_location(spec: ModelDeploymentSpec) -> tuple[str, list[dict[str, Any]], list[dict[str, Any]]]:
    """(MODELSHIP_MODEL_PATH, volumes, volume mounts) for the model's URI."""
    uri = spec.model.uri
    scheme, rest = uri.split("://", 1)
    if scheme == "pvc":
        claim, _, path = rest.partition("/")
        volume = {"name": "model", "persistentVolumeClaim": {"claimName": claim, "readOnly": True}}
        mount = {"name": "model", "mountPath": MODELS_MOUNT, "readOnly": True}
        return f"{MODELS_MOUNT}/{path}".rstrip("/"), [volume], [mount]
    if scheme == "file":
        return rest, [], []
    return uri, [], []  # hf://: the runtime downloads into its cache at start-up


def _pod_security() -> dict[str, Any]:
    return {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}}


def _container_security(user: int) -> dict[str, Any]:
    return {
        "runAsUser": user,
        "runAsGroup": user,
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
    }


def _probes(
    startup_seconds: int | None = None, ready_path: str = "/health/ready", live_path: str = "/health/live"
) -> dict[str, Any]:
    """Readiness and liveness; with `startup_seconds`, a startup probe that holds both back until the
    model is loaded and warm (or restarts the container once that budget is spent)."""
    probes: dict[str, Any] = {
        "readinessProbe": {
            "httpGet": {"path": ready_path, "port": SERVICE_PORT_NAME},
            "periodSeconds": 2,
            "timeoutSeconds": 2,
            "failureThreshold": 2,
        },
        "livenessProbe": {
            "httpGet": {"path": live_path, "port": SERVICE_PORT_NAME},
            "periodSeconds": 10,
            "timeoutSeconds": 5,
            "failureThreshold": 6,
        },
    }
    if startup_seconds:
        probes["startupProbe"] = {
            "httpGet": {"path": ready_path, "port": SERVICE_PORT_NAME},
            "periodSeconds": 1,
            "timeoutSeconds": 2,
            "failureThreshold": startup_seconds,
        }
    return probes


def revision_deployment(
    name: str, spec: ModelDeploymentSpec, revision: str, replicas: int, settings: OperatorSettings
) -> dict[str, Any]:
    runtime = spec.runtime
    path, volumes, mounts = model_location(spec)
    server = server_container(name, spec, revision, path, settings)
    resources = runtime.resources.to_api()
    tolerations = [t.to_api() for t in runtime.tolerations]
    if runtime.gpus:
        resources.setdefault("limits", {})[GPU_RESOURCE] = runtime.gpus
        tolerations.append({"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"})
    labels = revision_labels(name, revision)
    mounts = [*mounts, {"name": "tmp", "mountPath": WRITABLE}]
    volumes = [*volumes, {"name": "tmp", "emptyDir": {}}]
    if server.shared_memory:
        mounts.append({"name": "shm", "mountPath": "/dev/shm"})
        volumes.append({"name": "shm", "emptyDir": {"medium": "Memory"}})
    container: dict[str, Any] = {
        "name": "runtime",
        "image": server.image,
        **({"command": server.command} if server.command else {}),
        "args": server.args,
        "env": [*server.env, *[variable.to_api() for variable in runtime.env]],
        "ports": [{"name": SERVICE_PORT_NAME, "containerPort": server.port, "protocol": "TCP"}],
        "resources": resources,
        "securityContext": _container_security(settings.runtime_user),
        "volumeMounts": mounts,
        **_probes(startup_seconds=MODEL_STARTUP_SECONDS, ready_path=server.ready_path, live_path=server.live_path),
    }
    pod_spec: dict[str, Any] = {
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": _pod_security(),
        "terminationGracePeriodSeconds": SHUTDOWN_SECONDS + 5,
        "containers": [container],
        "volumes": volumes,
    }
    if runtime.node_selector:
        pod_spec["nodeSelector"] = dict(runtime.node_selector)
    if tolerations:
        pod_spec["tolerations"] = tolerations
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": revision_name(name, revision), "labels": labels},
        "spec": {
            "replicas": replicas,
            "revisionHistoryLimit": 1,
            "selector": {"matchLabels": revision_selector(name, revision)},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
            "template": {
                "metadata": {"labels": labels, "annotations": scrape_annotations(server.port)},
                "spec": pod_spec,
            },
        },
    }


def _service_ports() -> list[dict[str, Any]]:
    return [{"name": SERVICE_PORT_NAME, "port": SERVICE_PORT, "targetPort": SERVICE_PORT_NAME, "protocol": "TCP"}]


def revision_service(name: str, revision: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": revision_name(name, revision), "labels": revision_labels(name, revision)},
        "spec": {
            "selector": revision_selector(name, revision),
            "ports": _service_ports(),
        },
    }


def replicas_service(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "labels": common_labels(name, "model")},
        "spec": {
            "selector": model_pods_selector(name),
            "ports": _service_ports(),
        },
    }


def routing_config(spec: ModelDeploymentSpec, stable: str, canary: str | None, weight: int) -> dict[str, Any]:
    """What the router reads: the tracks, their revisions and weights, and the mirroring settings."""
    config = RoutingConfig.for_rollout(
        stable, canary, weight, spec.traffic.mirror_percent, spec.traffic.sticky_header, spec.model.task
    )
    return config.document()


def router_objects(
    name: str, spec: ModelDeploymentSpec, settings: OperatorSettings, routing: dict[str, Any]
) -> list[dict[str, Any]]:
    """The router: its routing ConfigMap, least-privilege identity, Deployment and the Service NAME."""
    router = router_name(name)
    labels = common_labels(name, COMPONENT_ROUTER)
    config_map = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": routing_config_name(name), "labels": labels},
        "data": {ROUTING_KEY: json.dumps(routing, sort_keys=True)},
    }
    account = {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": {"name": router, "labels": labels},
        "automountServiceAccountToken": False,
    }
    role = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": {"name": router, "labels": labels},
        "rules": [
            {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": ["get", "list", "watch"]},
            {
                "apiGroups": [""],
                "resources": ["configmaps"],
                "resourceNames": [routing_config_name(name)],
                "verbs": ["get", "list", "watch"],
            },
        ],
    }
    binding = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": {"name": router, "labels": labels},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": router},
        "subjects": [{"kind": "ServiceAccount", "name": router}],
    }
    env = [
        *identity_env(name, "router"),
        {"name": "MODELSHIP_ROUTING_CONFIGMAP", "value": routing_config_name(name)},
        {"name": "MODELSHIP_UPSTREAM_PORT", "value": str(RUNTIME_PORT)},
        *secret_env("MODELSHIP_API_KEY", spec),
    ]
    token_volume = {
        "name": "kube-api-access",
        "projected": {
            "sources": [
                {"serviceAccountToken": {"path": "token", "expirationSeconds": 3600}},
                {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
                {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {"fieldPath": "metadata.namespace"}}]}},
            ]
        },
    }
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": router, "labels": labels},
        "spec": {
            "replicas": spec.traffic.router_replicas,
            "revisionHistoryLimit": 2,
            "selector": {"matchLabels": router_selector(name)},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
            "template": {
                "metadata": {"labels": labels, "annotations": scrape_annotations(RUNTIME_PORT)},
                "spec": {
                    "serviceAccountName": router,
                    "automountServiceAccountToken": False,  # mounted below, read-only, with a bounded token
                    "enableServiceLinks": False,
                    "securityContext": _pod_security(),
                    "terminationGracePeriodSeconds": 15,
                    "containers": [
                        {
                            "name": "router",
                            "image": settings.router_image or settings.runtime_image,
                            "args": ["router"],
                            "env": env,
                            "ports": [{"name": SERVICE_PORT_NAME, "containerPort": RUNTIME_PORT, "protocol": "TCP"}],
                            "resources": {
                                "requests": {"cpu": "100m", "memory": "128Mi"},
                                "limits": {"memory": "512Mi"},
                            },
                            "securityContext": _container_security(settings.runtime_user),
                            "volumeMounts": [
                                {
                                    "name": "kube-api-access",
                                    "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount",
                                    "readOnly": True,
                                },
                                {"name": "tmp", "mountPath": "/tmp"},
                            ],
                            **_probes(),
                        }
                    ],
                    "volumes": [token_volume, {"name": "tmp", "emptyDir": {}}],
                },
            },
        },
    }
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "selector": router_selector(name),
            "ports": _service_ports(),
        },
    }
    return [config_map, account, role, binding, deployment, service]


def _route_backend(name: str, revision: str, weight: int, pools: bool) -> dict[str, Any]:
    if pools:
        # An InferencePool is named like the revision's Service; the Gateway sends to the pod its picker picks.
        return {
            "group": INFERENCE_GROUP,
            "kind": "InferencePool",
            "name": revision_name(name, revision),
            "weight": weight,
        }
    return {"name": revision_name(name, revision), "port": SERVICE_PORT, "weight": weight}


def http_route(
    name: str, namespace: str, spec: ModelDeploymentSpec, stable: str, canary: str | None, weight: int
) -> dict[str, Any]:
    gateway = spec.traffic.gateway
    assert gateway is not None, "the models require traffic.gateway in gatewayAPI mode"
    pools = gateway.inference_pool is not None
    backends = [_route_backend(name, stable, 100 - (weight if canary else 0), pools)]
    if canary:
        backends.append(_route_backend(name, canary, weight, pools))
    route: dict[str, Any] = {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": name, "labels": common_labels(name, "route")},
        "spec": {
            "parentRefs": [
                {
                    "name": p.name,
                    "namespace": p.namespace or namespace,
                    **({"sectionName": p.section_name} if p.section_name else {}),
                }
                for p in gateway.parent_refs
            ],
            "rules": [{"matches": [{"path": {"type": "PathPrefix", "value": "/v1/"}}], "backendRefs": backends}],
        },
    }
    if gateway.hostnames:
        route["spec"]["hostnames"] = list(gateway.hostnames)
    return route


def inference_pool(name: str, revision: str, settings: InferencePoolSettings) -> dict[str, Any]:
    """One revision's pods as a GIE InferencePool; the picker, when there is one, is the revision's own."""
    pool: dict[str, Any] = {
        "apiVersion": f"{INFERENCE_GROUP}/v1",
        "kind": "InferencePool",
        "metadata": {"name": revision_name(name, revision), "labels": revision_labels(name, revision)},
        "spec": {
            "selector": {"matchLabels": revision_selector(name, revision)},
            "targetPorts": [{"number": RUNTIME_PORT}],
        },
    }
    if settings.endpoint_picker is not None:
        pool["spec"]["endpointPickerRef"] = {
            "name": endpoint_picker_name(name, revision),
            "port": {"number": PICKER_GRPC_PORT},
            "failureMode": settings.endpoint_picker.failure_mode,
        }
    return pool


def endpoint_picker_objects(
    name: str, revision: str, picker: EndpointPicker, settings: OperatorSettings
) -> list[dict[str, Any]]:
    """The Deployment and Service of one pool's picker. The picker reads the model pods' metrics itself
    (waiting and running requests, KV-cache use: contract.POOL_METRICS names them for ModelShip's runtime)."""
    picker_name = endpoint_picker_name(name, revision)
    labels = common_labels(name, COMPONENT_ENDPOINT_PICKER) | {LABEL_REVISION: revision}
    pod_spec: dict[str, Any] = {
        "enableServiceLinks": False,
        "securityContext": _pod_security(),
        "terminationGracePeriodSeconds": 15,
        "containers": [
            {
                "name": "endpoint-picker",
                "image": picker.image,
                "args": [
                    f"--pool-name={revision_name(name, revision)}",
                    "--pool-namespace=$(POD_NAMESPACE)",
                    f"--pool-group={INFERENCE_GROUP}",
                    f"--grpc-port={PICKER_GRPC_PORT}",
                    f"--grpc-health-port={PICKER_HEALTH_PORT}",
                    *picker.args,
                ],
                "env": [{"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}}],
                "ports": [
                    {"name": "grpc", "containerPort": PICKER_GRPC_PORT, "protocol": "TCP"},
                    {"name": "grpc-health", "containerPort": PICKER_HEALTH_PORT, "protocol": "TCP"},
                ],
                "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"memory": "1Gi"}},
                "securityContext": _container_security(settings.runtime_user),
                # Ready once the picker has synced its pool (the GIE pickers' own health service); alive while
                # its gRPC server answers at all.
                "readinessProbe": {
                    "grpc": {"port": PICKER_HEALTH_PORT, "service": PICKER_HEALTH_SERVICE},
                    "periodSeconds": 2,
                },
                "livenessProbe": {"grpc": {"port": PICKER_HEALTH_PORT}, "periodSeconds": 10, "failureThreshold": 6},
            }
        ],
    }
    if picker.service_account_name:
        pod_spec["serviceAccountName"] = picker.service_account_name
    selector = {"matchLabels": {key: labels[key] for key in (LABEL_MODEL_DEPLOYMENT, LABEL_COMPONENT, LABEL_REVISION)}}
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": picker_name, "labels": labels},
        "spec": {
            "replicas": 1,
            "revisionHistoryLimit": 2,
            "selector": selector,
            "template": {"metadata": {"labels": labels}, "spec": pod_spec},
        },
    }
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": picker_name, "labels": labels},
        "spec": {
            "selector": selector["matchLabels"],
            # The Gateway's ext-proc client speaks gRPC, HTTP/2 without TLS, to the picker.
            "ports": [
                {
                    "name": "grpc",
                    "port": PICKER_GRPC_PORT,
                    "targetPort": "grpc",
                    "protocol": "TCP",
                    "appProtocol": "kubernetes.io/h2c",
                }
            ],
        },
    }
    return [deployment, service]
