"""Shared helpers for the fast tests."""

from __future__ import annotations

import copy
from typing import Any

import pytest

MINIMAL_SPEC: dict[str, Any] = {"model": {"uri": "pvc://models/tiny-gpt2"}}


@pytest.fixture
def minimal_spec() -> dict[str, Any]:
    return copy.deepcopy(MINIMAL_SPEC)
