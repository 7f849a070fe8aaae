"""In every phase the conditions read right: under kstatus (Flux, kubectl wait, cli-utils) and under the
Argo CD health check that ships in docs/argocd-health.lua."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from model_operator.api import ModelDeploymentStatus, Verdict
from tests.test_rollout import BLIND, BOTH, FAIL, HEALTHY, PASS, T0, Step, gate, gated, run

LUA = (Path(__file__).resolve().parents[1] / "docs" / "argocd-health.lua").read_text()


def kstatus(generation: int, status: dict[str, Any]) -> str:
    """cli-utils kstatus for a resource with standard conditions: InProgress, Failed or Current."""
    if status.get("observedGeneration") != generation:
        return "InProgress"
    conditions = {c["type"]: c["status"] for c in status.get("conditions", [])}
    if conditions.get("Reconciling") == "True":
        return "InProgress"
    if conditions.get("Stalled") == "True":
        return "Failed"
    return "Current"


def argocd(generation: int, status: dict[str, Any]) -> str:
    from lupa import LuaRuntime

    lua = LuaRuntime(unpack_returned_tuples=True)
    to_lua = lua.eval("function(f) return f end")
    table = lua.table_from(
        {
            "metadata": lua.table_from({"generation": generation}),
            "status": lua.table_from(
                {
                    **{k: v for k, v in status.items() if k != "conditions"},
                    "conditions": lua.table_from([lua.table_from(c) for c in status["conditions"]]),
                }
            ),
        },
        recursive=False,
    )
    check = lua.execute(f"return function(obj) {LUA} end")
    return str(to_lua(check)(table)["status"])


def scenario(name: str) -> tuple[int, dict[str, Any]]:
    canary = run([Step(10, "c1", {"s1": 2}), Step(15, "c1", {"s1": 2, "c1": 2})], HEALTHY)[-1].status
    statuses: dict[str, ModelDeploymentStatus] = {
        "healthy": HEALTHY,
        "first-deploy-waiting": run([Step(0, "s1", {})])[-1].status,
        "first-deploy-deadline": run([Step(0, "s1", {}), Step(200, "s1", {"s1": 0})])[-1].status,
        "canary-waiting-for-pods": run([Step(10, "c1", {"s1": 2})], HEALTHY)[-1].status,
        "canary-step": run([Step(20, "c1", {"s1": 2, "c1": 2}, PASS)], canary)[-1].status,
        "paused-by-user": run([Step(20, "c1", {"s1": 2, "c1": 2}, action="pause")], canary)[-1].status,
        "blind": run([Step(20, "c1", {"s1": 2, "c1": 2}, BLIND)], canary)[-1].status,
        "rolled-back": run([Step(20, "c1", {"s1": 2, "c1": 2}, FAIL)], canary)[-1].status,
        "validating": gated(Step(10, "c1", {"s1": 2}), Step(15, "c1", BOTH))[-1].status,
        "validation-blocked": gated(
            Step(10, "c1", {"s1": 2}), Step(15, "c1", BOTH), Step(20, "c1", BOTH, validation=gate(Verdict.ERROR))
        )[-1].status,
        "validation-failed": gated(
            Step(10, "c1", {"s1": 2}), Step(15, "c1", BOTH), Step(20, "c1", BOTH, validation=gate(Verdict.FAIL))
        )[-1].status,
    }
    status = statuses[name]
    return int(status.observed_generation or 0), status.to_api()


@pytest.mark.parametrize(
    ("name", "kstatus_result", "argocd_result"),
    [
        ("healthy", "Current", "Healthy"),
        ("first-deploy-waiting", "InProgress", "Progressing"),
        ("first-deploy-deadline", "Failed", "Degraded"),
        ("canary-waiting-for-pods", "InProgress", "Progressing"),
        ("canary-step", "InProgress", "Progressing"),
        ("paused-by-user", "InProgress", "Suspended"),
        ("blind", "InProgress", "Suspended"),
        ("rolled-back", "Failed", "Degraded"),
        ("validating", "InProgress", "Progressing"),
        ("validation-blocked", "Failed", "Degraded"),  # a person must fix the golden set or stable
        ("validation-failed", "Failed", "Degraded"),
    ],
)
def test_health_in_every_phase(name: str, kstatus_result: str, argocd_result: str) -> None:
    generation, status = scenario(name)
    assert kstatus(generation, status) == kstatus_result
    assert argocd(generation, status) == argocd_result


def test_a_spec_not_yet_observed_is_in_progress() -> None:
    generation, status = scenario("healthy")
    assert kstatus(generation + 1, status) == "InProgress"
    assert argocd(generation + 1, status) == "Progressing"


def test_invalid_spec_is_failed() -> None:
    from model_operator.rollout import Observation, RevisionState, decide

    decision = decide(
        HEALTHY,
        Observation(
            generation=9,
            spec=None,
            spec_problems=("spec.x: bad",),
            desired_revision=None,
            action=None,
            revisions={"s1": RevisionState(2, 2)},
            analysis=None,
            now=T0 + timedelta(seconds=30),
        ),
    )
    status = decision.status.to_api()
    assert kstatus(9, status) == "Failed"
    assert argocd(9, status) == "Degraded"


def test_a_failed_apply_is_stalled_not_ready() -> None:
    from model_operator.conditions import with_apply_failure

    status = HEALTHY.model_copy(
        update={"conditions": with_apply_failure(HEALTHY.conditions, "no HTTPRoute API", T0 + timedelta(seconds=60))}
    )
    document = status.to_api()
    assert kstatus(int(status.observed_generation or 0), document) == "Failed"
    assert argocd(int(status.observed_generation or 0), document) == "Degraded"
    stalled = next(c for c in status.conditions if c.type == "Stalled")
    assert (stalled.reason, stalled.message) == ("ApplyFailed", "no HTTPRoute API")


def test_retrying_the_same_failed_apply_changes_no_condition() -> None:
    """Each retry of a failed apply must produce the same status, or every retry would write (and the
    write come back as an event)."""
    from model_operator.conditions import with_apply_failure

    first = with_apply_failure(HEALTHY.conditions, "denied", T0 + timedelta(seconds=60))
    again = with_apply_failure(HEALTHY.conditions, "denied", T0 + timedelta(seconds=65), before=first)
    assert again == first
