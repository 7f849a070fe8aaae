"""A child's watch event wakes its ModelDeployment's loop, and makes the next reconcile apply the child
again only when its spec is no longer the one the operator applied (edited by someone else, or deleted)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import pytest

from model_operator.reconciler import Operator
from model_operator.settings import OperatorSettings

KEY = ("apps/v1", "Deployment", "chat-abc")


@dataclass
class FakeLoop:
    applied: dict[tuple[str, str, str], tuple[str, float, int]] = field(default_factory=dict)
    wake: asyncio.Event = field(default_factory=asyncio.Event)


def _child(generation: int, name: str = "chat-abc") -> dict[str, Any]:
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "generation": generation}}


@pytest.mark.parametrize(
    ("kind", "child", "reapplied"),
    [
        ("MODIFIED", _child(4), False),  # our own apply, or a status change: the generation we were given
        ("MODIFIED", _child(3), False),  # an older event arriving late
        ("MODIFIED", _child(5), True),  # a spec someone else wrote (kubectl scale, edit)
        ("DELETED", _child(4), True),
        ("MODIFIED", _child(9, name="other"), False),  # not a child this loop applied
    ],
)
def test_child_events(kind: str, child: dict[str, Any], reapplied: bool) -> None:
    operator = Operator(OperatorSettings(), kube=None)  # type: ignore[arg-type]
    loop = FakeLoop({KEY: ("spec", 0.0, 4)})
    operator.loops["ns/chat"] = loop  # type: ignore[assignment]
    operator.child_changed("ns", "chat", kind, child)
    assert (KEY not in loop.applied) is reapplied
    assert loop.wake.is_set()


def test_events_of_an_unknown_model_deployment_are_ignored() -> None:
    operator = Operator(OperatorSettings(), kube=None)  # type: ignore[arg-type]
    operator.child_changed("ns", "gone", "MODIFIED", _child(1))
    assert operator.loops == {}
