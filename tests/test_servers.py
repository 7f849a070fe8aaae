"""Each server's container as the operator renders it, from the same spec fields."""

from __future__ import annotations

from typing import Any

import pytest

from model_operator.api import InvalidSpecError, parse_spec
from model_operator.children import spec_for
from model_operator.manifests import revision_deployment
from model_operator.revision import revision_inputs
from model_operator.settings import OperatorSettings
from tests.test_api_validation import with_changes

SETTINGS = OperatorSettings(runtime_image="modelship/runtime:test", vllm_image="vllm/test", llamacpp_image="llama/test")
LIMITS = {"maxInputTokens": 1000, "maxNewTokens": 200}
CUSTOM = {"port": 9000, "healthPath": "/ping", "command": ["/bin/server"]}


def pod(**changes: Any) -> dict[str, Any]:
    spec = parse_spec(with_changes(**changes))
    return revision_deployment("chat", spec, "abc123", 1, SETTINGS)["spec"]["template"]  # type: ignore[no-any-return]


def container(**changes: Any) -> dict[str, Any]:
    return pod(**changes)["spec"]["containers"][0]  # type: ignore[no-any-return]


def flag(args: list[str], name: str) -> str:
    assert name in args, args
    return args[args.index(name) + 1]


def env_names(found: dict[str, Any]) -> set[str]:
    return {variable["name"] for variable in found["env"]}


# server, spec changes, image, (readiness path, liveness path), port, the variable the API key goes in
SERVERS = [
    ("modelship", {}, "modelship/runtime:test", ("/health/ready", "/health/live"), 8080, "MODELSHIP_API_KEY"),
    ("vllm", {"runtime__server": "vllm"}, "vllm/test", ("/health", "/health"), 8080, "VLLM_API_KEY"),
    ("llamacpp", {"runtime__server": "llamacpp"}, "llama/test", ("/health", "/health"), 8080, "LLAMA_API_KEY"),
    (
        "custom",
        {"runtime__server": "custom", "runtime__image": "example/server:1", "runtime__custom": CUSTOM},
        "example/server:1",
        ("/ping", "/ping"),
        9000,
        None,
    ),
]


@pytest.mark.parametrize(
    ("changes", "image", "paths", "port", "key_variable"), [s[1:] for s in SERVERS], ids=[s[0] for s in SERVERS]
)
def test_every_server_runs_locked_down_probed_and_scraped_on_its_port(
    changes: dict[str, Any], image: str, paths: tuple[str, str], port: int, key_variable: str | None
) -> None:
    template = pod(**changes, runtime__apiKeySecret={"name": "keys"})
    found = template["spec"]["containers"][0]
    assert found["image"] == image
    assert found["ports"] == [{"name": "http", "containerPort": port, "protocol": "TCP"}]
    ready, live = paths
    assert found["readinessProbe"]["httpGet"] == {"path": ready, "port": "http"}
    assert found["startupProbe"]["httpGet"] == {"path": ready, "port": "http"}
    assert found["livenessProbe"]["httpGet"] == {"path": live, "port": "http"}
    security = found["securityContext"]
    assert security["runAsUser"] == 1000
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert template["spec"]["securityContext"]["runAsNonRoot"] is True
    assert {"name": "tmp", "mountPath": "/tmp"} in found["volumeMounts"]
    assert {"name": "HOME", "value": "/tmp"} in found["env"]
    assert template["metadata"]["annotations"]["prometheus.io/port"] == str(port)
    keys = [v for v in found["env"] if v.get("valueFrom", {}).get("secretKeyRef")]
    if key_variable is None:  # the router checks the key in front of a server it cannot configure
        assert keys == []
    else:
        assert keys == [{"name": key_variable, "valueFrom": {"secretKeyRef": {"name": "keys", "key": "api-key"}}}]


def test_vllm_gets_the_spec_as_its_flags() -> None:
    found = container(
        runtime__server="vllm",
        runtime__gpus=2,
        runtime__limits=LIMITS,
        runtime__batching={"maxBatchSize": 24},
        model__dtype="bfloat16",
        runtime__args=["--enforce-eager"],
    )
    args = found["args"]
    assert flag(args, "--model") == "/models/tiny-gpt2"
    assert flag(args, "--served-model-name") == "chat"
    assert flag(args, "--port") == "8080"
    assert flag(args, "--dtype") == "bfloat16"
    assert flag(args, "--max-model-len") == "1200"
    assert flag(args, "--max-num-seqs") == "24"
    assert flag(args, "--tensor-parallel-size") == "2"
    assert args[-1] == "--enforce-eager"  # the user's arguments come last, so they win
    assert "command" not in found  # the image's entrypoint
    assert found["resources"]["limits"]["nvidia.com/gpu"] == 2
    assert {"name": "shm", "mountPath": "/dev/shm"} in found["volumeMounts"]
    assert {"VLLM_CACHE_ROOT", "VLLM_NO_USAGE_STATS", "HF_HOME"} <= env_names(found)
    assert not any(name.startswith("MODELSHIP_") for name in env_names(found))


def test_vllm_on_cpu_binds_its_threads_and_on_one_gpu_runs_unsharded() -> None:
    cpu = container(runtime__server="vllm")
    assert {"name": "VLLM_CPU_OMP_THREADS_BIND", "value": "auto"} in cpu["env"]
    one_gpu = container(runtime__server="vllm", runtime__gpus=1)
    assert "--tensor-parallel-size" not in one_gpu["args"]
    assert "VLLM_CPU_OMP_THREADS_BIND" not in env_names(one_gpu)


def test_vllm_embeddings_and_a_hugging_face_revision() -> None:
    args = container(runtime__server="vllm", model__task="embeddings", model__uri="hf://org/model@v2")["args"]
    assert flag(args, "--model") == "org/model"
    assert flag(args, "--revision") == "v2"
    assert flag(args, "--runner") == "pooling"


def test_llamacpp_gets_slots_context_and_metrics() -> None:
    found = container(
        runtime__server="llamacpp",
        model__uri="pvc://models/smollm2/model-q8_0.gguf",
        runtime__limits=LIMITS,
        runtime__batching={"maxBatchSize": 4},
        runtime__gpus=1,
    )
    args = found["args"]
    assert flag(args, "--model") == "/models/smollm2/model-q8_0.gguf"
    assert flag(args, "--alias") == "chat"
    assert flag(args, "--host") == "0.0.0.0"
    assert flag(args, "--parallel") == "4"
    assert flag(args, "--ctx-size") == "4800"  # each of the 4 slots holds a 1,000-token prompt and 200 new
    assert flag(args, "--n-predict") == "200"
    assert flag(args, "--n-gpu-layers") == "999"
    assert {"--cont-batching", "--metrics"} <= set(args)
    threads = next(v for v in found["env"] if v["name"] == "LLAMA_ARG_THREADS")
    assert threads["valueFrom"]["resourceFieldRef"]["resource"] == "limits.cpu"


def test_llamacpp_embeddings_and_a_hugging_face_quantization() -> None:
    args = container(runtime__server="llamacpp", model__task="embeddings", model__uri="hf://org/model-GGUF@Q8_0")[
        "args"
    ]
    assert flag(args, "--hf-repo") == "org/model-GGUF:Q8_0"
    assert "--embeddings" in args


def test_custom_server_runs_its_command_and_only_the_users_settings() -> None:
    found = container(
        runtime__server="custom",
        runtime__image="example/server:1",
        runtime__custom=CUSTOM,
        runtime__args=["--listen", "0.0.0.0:9000"],
        runtime__env=[{"name": "MODELSHIP_MODEL_PATH", "value": "/models/x"}],
    )
    assert found["command"] == ["/bin/server"]
    assert found["args"] == ["--listen", "0.0.0.0:9000"]
    # the model's place and served name, for `$(MODEL_PATH)` in its arguments
    assert {"name": "MODEL_PATH", "value": "/models/tiny-gpt2"} in found["env"]
    assert {"name": "MODEL_NAME", "value": "chat"} in found["env"]
    # the operator sets no MODELSHIP_* for a custom server, so the user's own are theirs to set
    assert {"name": "MODELSHIP_MODEL_PATH", "value": "/models/x"} in found["env"]


def test_modelship_runtime_env_stays_the_operators() -> None:
    with pytest.raises(InvalidSpecError, match="is set by the operator"):
        parse_spec(with_changes(runtime__env=[{"name": "MODELSHIP_MODEL_PATH", "value": "/x"}]))
    found = container()
    assert found["args"] == ["serve"]
    assert {"MODELSHIP_MODEL_PATH", "MODELSHIP_MAX_BATCH_SIZE", "MODELSHIP_THREADS"} <= env_names(found)
    assert {"name": "shm", "mountPath": "/dev/shm"} not in found["volumeMounts"]


def test_a_revisions_record_gives_back_its_server() -> None:
    """The analysis learns stable's server from its revision record, whatever the spec says today."""
    custom = parse_spec(
        with_changes(runtime__server="custom", runtime__image="example/server:1", runtime__custom=CUSTOM)
    )
    record = revision_inputs(custom, SETTINGS.server_image("custom"))
    today = parse_spec(with_changes())
    assert spec_for(today, record).runtime == custom.runtime
    assert spec_for(today, revision_inputs(today, SETTINGS.runtime_image)).runtime.server == "modelship"
