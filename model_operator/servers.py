"""Each model server's container, derived from the same spec fields: how to start it (image, command,
arguments, environment), the port it serves on and the paths that say it is loaded and alive.

ModelShip's runtime reads its settings from MODELSHIP_* variables; vLLM and llama.cpp take flags, and the
flags here are the ones both document for the same meaning (the model, its served name, the context and
batch sizes, GPUs). A spec's `runtime.args` go last, so a user can add any flag the server has. Pure
functions: manifests.revision_deployment puts the result in a Pod template.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .api.spec import ModelDeploymentSpec
from .naming import RUNTIME_PORT
from .settings import OperatorSettings

# Whatever the server, the pod writes only here (the root filesystem is read-only): caches and home.
WRITABLE = "/tmp"
SHUTDOWN_SECONDS = 25


@dataclass(frozen=True)
class ServerContainer:
    """What differs between servers in a model pod."""

    image: str
    args: list[str]
    env: list[dict[str, Any]]
    port: int
    ready_path: str
    live_path: str
    command: list[str] = field(default_factory=list)
    # vLLM's workers share tensors through /dev/shm, which a container gets at 64 MiB by default.
    shared_memory: bool = False


def _field(path: str) -> dict[str, Any]:
    return {"valueFrom": {"fieldRef": {"fieldPath": path}}}


def identity_env(name: str, revision: str) -> list[dict[str, Any]]:
    """Who a ModelShip process (runtime or router) is: the labels of its metrics."""
    return [
        {"name": "MODELSHIP_NAMESPACE", **_field("metadata.namespace")},
        {"name": "MODELSHIP_MODEL_DEPLOYMENT", "value": name},
        {"name": "MODELSHIP_REVISION", "value": revision},
        {"name": "MODELSHIP_PORT", "value": str(RUNTIME_PORT)},
        {"name": "HOME", "value": WRITABLE},
    ]


def secret_env(variable: str, spec: ModelDeploymentSpec) -> list[dict[str, Any]]:
    """The spec's API key, from its Secret, in the variable a server reads it from."""
    secret = spec.runtime.api_key_secret
    if secret is None:
        return []
    return [{"name": variable, "valueFrom": {"secretKeyRef": {"name": secret.name, "key": secret.key}}}]


def _cpu_count(variable: str) -> dict[str, Any]:
    # A server sizes its thread pool from the host's cores, not the pod's CPU limit; oversubscribed pods on
    # a shared node then slow each other down.
    return {"name": variable, "valueFrom": {"resourceFieldRef": {"resource": "limits.cpu", "divisor": "1"}}}


def hf_repository(uri: str) -> tuple[str, str | None]:
    """`hf://ORG/NAME[@REVISION]` as (ORG/NAME, REVISION)."""
    repository, _, revision = uri.removeprefix("hf://").partition("@")
    return repository, revision or None


def _home() -> list[dict[str, Any]]:
    return [
        {"name": "HOME", "value": WRITABLE},
        {"name": "XDG_CACHE_HOME", "value": f"{WRITABLE}/.cache"},
        {"name": "HF_HOME", "value": f"{WRITABLE}/huggingface"},
    ]


def modelship(name: str, spec: ModelDeploymentSpec, revision: str, model_path: str, image: str) -> ServerContainer:
    runtime, limits = spec.runtime, spec.runtime.limits
    env = [
        *identity_env(name, revision),
        {"name": "MODELSHIP_MODEL_PATH", "value": model_path},
        {"name": "MODELSHIP_MODEL_NAME", "value": name},
        {"name": "MODELSHIP_TASK", "value": spec.model.task},
        {"name": "MODELSHIP_DTYPE", "value": spec.model.dtype},
        {"name": "MODELSHIP_DEVICE", "value": "cuda" if runtime.gpus else "cpu"},
        {"name": "MODELSHIP_MAX_BATCH_SIZE", "value": str(runtime.batching.max_batch_size)},
        {"name": "MODELSHIP_MAX_BATCH_WAIT_MS", "value": str(runtime.batching.max_batch_wait_ms)},
        {"name": "MODELSHIP_MAX_INPUT_TOKENS", "value": str(limits.max_input_tokens)},
        {"name": "MODELSHIP_MAX_NEW_TOKENS", "value": str(limits.max_new_tokens)},
        {"name": "MODELSHIP_MAX_CONCURRENT_REQUESTS", "value": str(limits.max_concurrent_requests)},
        {"name": "MODELSHIP_REQUEST_TIMEOUT_SECONDS", "value": f"{limits.request_timeout_seconds:g}"},
        {"name": "MODELSHIP_TRUNCATION", "value": limits.truncation},
        {"name": "MODELSHIP_SHUTDOWN_TIMEOUT_SECONDS", "value": str(SHUTDOWN_SECONDS)},
        {"name": "HF_HOME", "value": f"{WRITABLE}/huggingface"},
        _cpu_count("MODELSHIP_THREADS"),
        *secret_env("MODELSHIP_API_KEY", spec),
    ]
    return ServerContainer(image, ["serve"], env, RUNTIME_PORT, "/health/ready", "/health/live")


def vllm(name: str, spec: ModelDeploymentSpec, model_path: str, image: str) -> ServerContainer:
    runtime, limits = spec.runtime, spec.runtime.limits
    if spec.model.scheme == "hf":
        repository, hf_revision = hf_repository(spec.model.uri)
        model = ["--model", repository, *(["--revision", hf_revision] if hf_revision else [])]
    else:
        model = ["--model", model_path]
    args = [
        *model,
        "--served-model-name",
        name,
        "--port",
        str(RUNTIME_PORT),
        "--dtype",
        spec.model.dtype,
        # vLLM's context length covers prompt and answer; its own check then refuses what ours would.
        "--max-model-len",
        str(limits.max_input_tokens + limits.max_new_tokens),
        "--max-num-seqs",
        str(runtime.batching.max_batch_size),
    ]
    if spec.model.task == "embeddings":
        args += ["--runner", "pooling"]
    if runtime.gpus > 1:
        args += ["--tensor-parallel-size", str(runtime.gpus)]
    env = [
        *_home(),
        {"name": "VLLM_CACHE_ROOT", "value": f"{WRITABLE}/vllm"},
        {"name": "VLLM_NO_USAGE_STATS", "value": "1"},
        {"name": "DO_NOT_TRACK", "value": "1"},
        *secret_env("VLLM_API_KEY", spec),
    ]
    if not runtime.gpus:
        env.append({"name": "VLLM_CPU_OMP_THREADS_BIND", "value": "auto"})
    return ServerContainer(image, [*args, *runtime.args], env, RUNTIME_PORT, "/health", "/health", shared_memory=True)


def llamacpp(name: str, spec: ModelDeploymentSpec, model_path: str, image: str) -> ServerContainer:
    runtime, limits = spec.runtime, spec.runtime.limits
    slots = runtime.batching.max_batch_size
    if spec.model.scheme == "hf":
        repository, quantization = hf_repository(spec.model.uri)  # llama.cpp's `-hf ORG/NAME[:QUANT]`
        model = ["--hf-repo", repository + (f":{quantization}" if quantization else "")]
    else:
        model = ["--model", model_path]
    args = [
        *model,
        "--alias",
        name,
        "--host",
        "0.0.0.0",
        "--port",
        str(RUNTIME_PORT),
        "--parallel",
        str(slots),
        "--cont-batching",
        # The context is shared by the slots: each gets the prompt and answer the limits allow.
        "--ctx-size",
        str((limits.max_input_tokens + limits.max_new_tokens) * slots),
        "--n-predict",
        str(limits.max_new_tokens),
        "--metrics",
        "--no-webui",
    ]
    if spec.model.task == "embeddings":
        args.append("--embeddings")
    if runtime.gpus:
        args += ["--n-gpu-layers", "999"]
    env = [*_home(), _cpu_count("LLAMA_ARG_THREADS"), *secret_env("LLAMA_API_KEY", spec)]
    return ServerContainer(image, [*args, *runtime.args], env, RUNTIME_PORT, "/health", "/health")


# What a custom server is told, as variables its command and arguments can name: Kubernetes expands
# `$(MODEL_PATH)` in them from the container's environment.
CUSTOM_MODEL_PATH = "MODEL_PATH"
CUSTOM_MODEL_NAME = "MODEL_NAME"


def custom(name: str, spec: ModelDeploymentSpec, model_path: str) -> ServerContainer:
    runtime, settings = spec.runtime, spec.runtime.custom
    assert runtime.image is not None  # the spec's rules require an image and the custom settings
    assert settings is not None
    told = [{"name": CUSTOM_MODEL_PATH, "value": model_path}, {"name": CUSTOM_MODEL_NAME, "value": name}]
    return ServerContainer(
        runtime.image,
        list(runtime.args),
        [*_home(), *told],
        settings.port,
        settings.health_path,
        settings.health_path,
        command=list(settings.command),
    )


def server_container(
    name: str, spec: ModelDeploymentSpec, revision: str, model_path: str, settings: OperatorSettings
) -> ServerContainer:
    """The container of `spec.runtime.server`; the spec's own `runtime.env` is added by the caller."""
    server = spec.runtime.server
    image = spec.runtime.image or settings.server_image(server)
    if server == "vllm":
        return vllm(name, spec, model_path, image)
    if server == "llamacpp":
        return llamacpp(name, spec, model_path, image)
    if server == "custom":
        return custom(name, spec, model_path)
    return modelship(name, spec, revision, model_path, image)
