"""Shared helpers for the fast tests."""

from __future__ import annotations

import copy
from typing import Any

import pytest

MINIMAL_SPEC: dict[str, Any] = {"model": {"uri": "pvc://models/tiny-gpt2"}}


@pytest.fixture
def minimal_spec() -> dict[str, Any]:
    return copy.deepcopy(MINIMAL_SPEC)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Any:
    from model_runtime.tinymodel import build

    return build(tmp_path_factory.mktemp("models") / "tiny-gpt2")


@pytest.fixture(scope="session")
def tiny_loaded(tiny_model_dir: Any) -> Any:
    import torch

    from model_runtime.model import Placement, load

    return load(str(tiny_model_dir), "text-generation", Placement("cpu", torch.float32))
