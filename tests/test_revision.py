"""Revision hashes: stable, sensitive to what changes the pods, blind to traffic and rollout settings."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest

from model_operator.api import parse_spec
from model_operator.revision import revision_of
from tests.test_api_validation import with_changes

IMAGE = "ghcr.io/modelship/runtime:0.1.0"
BASE = with_changes()


def rev(spec: dict[str, Any], image: str = IMAGE) -> str:
    return revision_of(parse_spec(spec), image)


def test_hash_is_short_hex() -> None:
    value = rev(BASE)
    assert len(value) == 8
    int(value, 16)


def test_same_spec_same_hash_in_another_process() -> None:
    code = (
        "from model_operator.api import parse_spec; from model_operator.revision import revision_of;"
        f"print(revision_of(parse_spec({BASE!r}), {IMAGE!r}))"
    )
    other = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONHASHSEED": "123", "PATH": ""},
        cwd=".",
    )
    assert other.stdout.strip() == rev(BASE)


def test_known_value_pins_the_algorithm() -> None:
    # If this changes, every running ModelDeployment would see a new revision after an operator upgrade.
    assert rev(BASE) == KNOWN_BASE_REVISION


def test_spelling_out_defaults_keeps_the_hash() -> None:
    explicit = with_changes(
        model__task="text-generation", model__dtype="auto", runtime__batching={"maxBatchSize": 16, "maxBatchWaitMs": 5}
    )
    assert rev(explicit) == rev(BASE)


def test_explicit_default_image_keeps_the_hash() -> None:
    assert rev(with_changes(runtime__image=IMAGE)) == rev(BASE)


def test_spelling_out_the_default_server_keeps_the_hash() -> None:
    # runtime.server, args and custom came after revisions were first hashed: at their defaults they must
    # leave every existing revision as it was (test_known_value_pins_the_algorithm pins that value).
    assert rev(with_changes(runtime__server="modelship", runtime__args=[])) == rev(BASE)


CHANGES_THAT_MAKE_A_REVISION = [
    ("uri", with_changes(model__uri="pvc://models/other")),
    ("task", with_changes(model__task="embeddings")),
    ("dtype", with_changes(model__dtype="float16")),
    ("image", with_changes(runtime__image="example.com/runtime:2")),
    ("gpus", with_changes(runtime__gpus=1)),
    ("resources", with_changes(runtime__resources={"limits": {"cpu": "2"}})),
    ("env", with_changes(runtime__env=[{"name": "A", "value": "1"}])),
    ("batching", with_changes(runtime__batching={"maxBatchSize": 8})),
    ("limits", with_changes(runtime__limits={"maxNewTokens": 64})),
    ("node-selector", with_changes(runtime__nodeSelector={"pool": "gpu"})),
    ("tolerations", with_changes(runtime__tolerations=[{"key": "gpu", "operator": "Exists"}])),
    ("api-key", with_changes(runtime__apiKeySecret={"name": "key"})),
    ("server", with_changes(runtime__server="vllm")),
    ("server-args", with_changes(runtime__server="vllm", runtime__args=["--enforce-eager"])),
    (
        "custom-port",
        with_changes(runtime__server="custom", runtime__image="example/server:1", runtime__custom={"port": 9000}),
    ),
]


@pytest.mark.parametrize(
    "spec", [c[1] for c in CHANGES_THAT_MAKE_A_REVISION], ids=[c[0] for c in CHANGES_THAT_MAKE_A_REVISION]
)
def test_model_or_runtime_change_makes_a_new_revision(spec: dict[str, Any]) -> None:
    assert rev(spec) != rev(BASE)


def test_default_image_change_makes_a_new_revision() -> None:
    assert rev(BASE, image="ghcr.io/modelship/runtime:0.2.0") != rev(BASE)


CHANGES_THAT_KEEP_THE_REVISION = [
    ("replicas", with_changes(runtime__replicas=4)),
    ("traffic-mode", with_changes(traffic__mode="replicas")),
    ("mirror", with_changes(traffic__mirrorPercent=50)),
    ("steps", with_changes(rollout__steps=[{"weight": 5}, {"weight": 25}, {"weight": 75}])),
    ("analysis", with_changes(rollout__analysis={"interval": "2s", "minRequests": 10})),
    ("deadline", with_changes(rollout__progressDeadlineSeconds=60)),
    ("paused", with_changes(paused=True)),
]


@pytest.mark.parametrize(
    "spec", [c[1] for c in CHANGES_THAT_KEEP_THE_REVISION], ids=[c[0] for c in CHANGES_THAT_KEEP_THE_REVISION]
)
def test_traffic_and_rollout_changes_keep_the_revision(spec: dict[str, Any]) -> None:
    assert rev(spec) == rev(BASE)


KNOWN_BASE_REVISION = "9f250c78"
