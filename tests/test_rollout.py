"""The rollout state machine, one row per transition: a scenario is a list of reconciles, each with what
the handler observed, and what the decision must say."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from model_operator.analysis import Outcome
from model_operator.api import ModelDeploymentStatus, Phase, Verdict, parse_spec
from model_operator.api.status import Fingerprints, MetricResult
from model_operator.golden import ValidationOutcome
from model_operator.rollout import (
    MIN_REQUEUE_SECONDS,
    Decision,
    Observation,
    RevisionState,
    analysis_due,
    decide,
    validation_due,
)
from tests.test_api_validation import with_changes

T0 = datetime(2026, 1, 1, tzinfo=UTC)
STEPS = [{"weight": 10, "pause": "30s"}, {"weight": 50, "pause": "30s"}]
SPEC = with_changes(
    runtime__replicas=2,
    rollout__steps=STEPS,
    rollout__analysis={"interval": "10s", "minRequests": 100, "noDataTimeout": "60s"},
    rollout__progressDeadlineSeconds=120,
    rollout__abortScaleDownDelaySeconds=300,
)


def outcome(verdict: Verdict, message: str = "") -> Outcome:
    metric = MetricResult(
        name="requests",
        canary=500,
        stable=500,
        canary_samples=500,
        stable_samples=500,
        verdict=Verdict.PASS if verdict == Verdict.PASS else Verdict.INCONCLUSIVE,
        reason="",
    )
    return Outcome(verdict, message or verdict.value, (metric,))


PASS, FAIL, BLIND, ERROR, WAIT = (
    outcome(Verdict.PASS),
    outcome(Verdict.FAIL, "errors up"),
    outcome(Verdict.NO_DATA, "no metrics"),
    outcome(Verdict.ERROR, "timeout"),
    outcome(Verdict.INCONCLUSIVE, "need requests"),
)


@dataclass
class Step:
    """One reconcile: seconds after T0, the desired revision, pods ready per revision, analysis, action."""

    at: float
    desired: str
    ready: dict[str, int] = field(default_factory=dict)
    analysis: Outcome | None = None
    action: str | None = None
    spec: dict[str, Any] | None = None
    validation: ValidationOutcome | None = None


def run(steps: list[Step], status: ModelDeploymentStatus | None = None) -> list[Decision]:
    status = status or ModelDeploymentStatus()
    decisions = []
    for number, step in enumerate(steps):
        spec = parse_spec(step.spec or SPEC)
        observation = Observation(
            generation=number + 1,
            spec=spec,
            spec_problems=(),
            desired_revision=step.desired,
            action=step.action,
            revisions={rev: RevisionState(replicas=2, ready=ready) for rev, ready in step.ready.items()},
            analysis=step.analysis,
            now=T0 + timedelta(seconds=step.at),
            validation=step.validation,
        )
        decision = decide(status, observation)
        decisions.append(decision)
        status = decision.status
    return decisions


def condition(decision: Decision, kind: str) -> tuple[str, str]:
    found = next(c for c in decision.status.conditions if c.type == kind)
    return found.status, found.reason


def reasons(decision: Decision) -> list[str]:
    return [e.reason for e in decision.events]


# A healthy stable "s1" with nothing in flight, as a starting point for most scenarios.
HEALTHY = run([Step(0, "s1", {}), Step(5, "s1", {"s1": 2})])[-1].status
CANARY_AT_STEP_1 = run([Step(10, "c1", {"s1": 2}), Step(15, "c1", {"s1": 2, "c1": 2})], HEALTHY)[-1].status


def test_first_deploy_becomes_healthy() -> None:
    waiting, healthy = run([Step(0, "s1", {}), Step(5, "s1", {"s1": 2})])
    assert waiting.status.phase == Phase.PROGRESSING
    assert waiting.plan == {"s1": 2}
    assert condition(waiting, "Ready") == ("False", "WaitingForPods")
    assert condition(waiting, "Reconciling")[0] == "True"
    assert healthy.status.phase == Phase.HEALTHY
    assert healthy.status.stable_revision == "s1"
    assert condition(healthy, "Ready") == ("True", "Healthy")
    assert condition(healthy, "Reconciling")[0] == "False"
    assert condition(healthy, "Stalled")[0] == "False"
    assert condition(healthy, "UpToDate")[0] == "True"
    assert [h.result.value for h in healthy.status.history] == ["Deployed"]


def test_first_deploy_past_the_deadline_fails_but_recovers() -> None:
    late, recovered = run([Step(0, "s1", {}), Step(200, "s1", {"s1": 0}), Step(210, "s1", {"s1": 2})])[1:]
    assert late.status.phase == Phase.FAILED
    assert condition(late, "Stalled") == ("True", "ProgressDeadlineExceeded")
    assert recovered.status.phase == Phase.HEALTHY


def test_good_canary_walks_the_steps_and_is_promoted() -> None:
    ready = {"s1": 2, "c1": 2}
    decisions = run(
        [
            Step(10, "c1", {"s1": 2}),  # new revision: canary created at weight 0
            Step(15, "c1", ready),  # canary ready: step 1 at 10%
            Step(25, "c1", ready, WAIT),  # not enough requests yet
            Step(35, "c1", ready, PASS),  # passes, but the 30s pause is not over
            Step(46, "c1", ready, PASS),  # pause over and passing: step 2 at 50%
            Step(56, "c1", ready, PASS),
            Step(77, "c1", ready, PASS),  # last step passed: promoted
            Step(80, "c1", {"s1": 2, "c1": 2}),
            Step(120, "c1", {"s1": 2, "c1": 2}),  # the old stable is gone after the scale-down delay
        ],
        HEALTHY,
    )
    created, step1, waiting, early, step2, _, promoted, after, later = decisions
    assert (created.canary, created.weight, created.status.current_step) == ("c1", 0, None)
    assert created.plan == {"s1": 2, "c1": 2}
    assert "RolloutStarted" in reasons(created)
    assert condition(created, "Progressing") == ("True", "WaitingForCanary")
    assert (step1.weight, step1.status.current_step) == (10, 0)
    assert waiting.weight == 10
    assert condition(waiting, "AnalysisPassing") == ("Unknown", "Inconclusive")
    assert early.weight == 10
    assert (step2.weight, step2.status.current_step) == (50, 1)
    assert promoted.status.stable_revision == "c1"
    assert promoted.canary is None
    assert promoted.rollout_result == "promoted"
    assert "Promoted" in reasons(promoted)
    assert promoted.plan == {"c1": 2, "s1": 2}  # s1 retires after the scale-down delay
    assert promoted.status.phase == Phase.HEALTHY
    assert condition(promoted, "UpToDate")[0] == "True"
    assert after.plan == {"c1": 2, "s1": 2}
    assert later.plan == {"c1": 2}
    assert [h.result.value for h in later.status.history] == ["Deployed", "Promoted"]


def test_failed_analysis_rolls_back_at_once() -> None:
    failed, held = run([Step(25, "c1", {"s1": 2, "c1": 2}, FAIL), Step(30, "c1", {"s1": 2, "c1": 2})], CANARY_AT_STEP_1)
    assert failed.weight == 0
    assert failed.canary is None
    assert failed.status.aborted_revision == "c1"
    assert failed.rollout_result == "rolled_back"
    assert failed.status.phase == Phase.DEGRADED
    assert condition(failed, "RolledBack")[0] == "True"
    assert condition(failed, "Stalled")[0] == "True"
    assert condition(failed, "UpToDate") == ("False", "RolledBack")
    assert condition(failed, "Ready")[0] == "False"
    assert "errors up" in failed.status.history[-1].reason
    assert failed.plan == {"s1": 2, "c1": 2}  # kept for inspection at weight 0
    # The same revision is not retried while the spec asks for it.
    assert held.canary is None
    assert held.status.phase == Phase.DEGRADED


def test_rolled_back_canary_is_scaled_down_after_the_delay() -> None:
    failed = run([Step(25, "c1", {"s1": 2, "c1": 2}, FAIL)], CANARY_AT_STEP_1)[-1]
    later = run([Step(400, "c1", {"s1": 2, "c1": 2})], failed.status)[-1]
    assert later.plan == {"s1": 2}


def test_spec_change_after_rollback_starts_again() -> None:
    failed = run([Step(25, "c1", {"s1": 2, "c1": 2}, FAIL)], CANARY_AT_STEP_1)[-1]
    fresh = run([Step(40, "c2", {"s1": 2, "c1": 2})], failed.status)[-1]
    assert fresh.canary == "c2"
    assert fresh.status.phase == Phase.PROGRESSING


def test_retry_action_retries_the_rolled_back_revision() -> None:
    failed = run([Step(25, "c1", {"s1": 2, "c1": 2}, FAIL)], CANARY_AT_STEP_1)[-1]
    retried = run([Step(40, "c1", {"s1": 2, "c1": 2}, action="retry")], failed.status)[-1]
    assert retried.canary == "c1"
    assert retried.consume_action
    assert "Retry" in reasons(retried)


def test_spec_change_mid_rollout_restarts_at_step_zero_with_stable_untouched() -> None:
    at_50 = run([Step(46, "c1", {"s1": 2, "c1": 2}, PASS)], CANARY_AT_STEP_1)[-1]
    assert at_50.weight == 50
    changed = run([Step(50, "c2", {"s1": 2, "c1": 2})], at_50.status)[-1]
    assert changed.canary == "c2"
    assert changed.weight == 0
    assert changed.status.current_step is None
    assert changed.status.stable_revision == "s1"
    assert changed.plan == {"s1": 2, "c2": 2}  # c1 is dropped
    assert changed.status.history[-1].result.value == "Superseded"


def test_spec_back_to_stable_drops_the_canary() -> None:
    back = run([Step(20, "s1", {"s1": 2, "c1": 2})], CANARY_AT_STEP_1)[-1]
    assert back.canary is None
    assert back.plan == {"s1": 2}
    assert back.status.phase == Phase.HEALTHY


@pytest.mark.parametrize(
    ("action", "canary", "result", "event"),
    [
        ("promote", None, "promoted", "Promoted"),
        ("abort", None, "aborted", "RolledBack"),
    ],
)
def test_manual_promote_and_abort(action: str, canary: None, result: str, event: str) -> None:
    decision = run([Step(20, "c1", {"s1": 2, "c1": 2}, action=action)], CANARY_AT_STEP_1)[-1]
    assert decision.canary is canary
    assert decision.rollout_result == result
    assert event in reasons(decision)
    assert decision.consume_action


def test_pause_holds_and_resume_restarts_the_step_window() -> None:
    paused, held, resumed = run(
        [
            Step(20, "c1", {"s1": 2, "c1": 2}, action="pause"),
            Step(60, "c1", {"s1": 2, "c1": 2}, PASS),  # passing evidence does not move a paused rollout
            Step(70, "c1", {"s1": 2, "c1": 2}, action="resume"),
        ],
        CANARY_AT_STEP_1,
    )
    assert paused.status.phase == Phase.PAUSED
    assert condition(paused, "Reconciling") == ("True", "Paused")
    assert held.weight == 10
    assert held.status.phase == Phase.PAUSED
    assert resumed.status.phase == Phase.PROGRESSING
    assert resumed.status.step_started_at == T0 + timedelta(seconds=70)


def test_spec_paused_holds_too() -> None:
    held = run([Step(60, "c1", {"s1": 2, "c1": 2}, PASS, spec={**SPEC, "paused": True})], CANARY_AT_STEP_1)[-1]
    assert held.weight == 10
    assert held.status.phase == Phase.PAUSED


def test_no_data_pauses_then_recovers() -> None:
    blind, still, back, advanced = run(
        [
            Step(25, "c1", {"s1": 2, "c1": 2}, BLIND),
            Step(35, "c1", {"s1": 2, "c1": 2}, ERROR),
            Step(45, "c1", {"s1": 2, "c1": 2}, PASS),
            Step(55, "c1", {"s1": 2, "c1": 2}, PASS),
        ],
        CANARY_AT_STEP_1,
    )
    assert blind.status.phase == Phase.PAUSED
    assert blind.weight == 10
    assert "AnalysisBlind" in reasons(blind)
    assert condition(blind, "AnalysisPassing") == ("Unknown", "NoData")
    assert still.status.phase == Phase.PAUSED
    assert back.status.blind_since is None
    assert "AnalysisRecovered" in reasons(back)
    assert advanced.weight == 50


@pytest.mark.parametrize(
    ("on_no_data", "canary", "phase", "stalled"),
    [
        ("pause", "c1", Phase.PAUSED, ("True", "AnalysisBlind")),
        ("rollback", None, Phase.DEGRADED, ("True", "RolledBack")),
    ],
)
def test_no_data_budget_exhausted(on_no_data: str, canary: str | None, phase: Phase, stalled: tuple[str, str]) -> None:
    spec = with_changes(
        runtime__replicas=2,
        rollout__steps=STEPS,
        rollout__analysis={"interval": "10s", "minRequests": 100, "noDataTimeout": "60s", "onNoData": on_no_data},
    )
    decisions = run(
        [Step(25, "c1", {"s1": 2, "c1": 2}, BLIND, spec=spec), Step(100, "c1", {"s1": 2, "c1": 2}, BLIND, spec=spec)],
        CANARY_AT_STEP_1,
    )
    last = decisions[-1]
    assert last.canary == canary
    assert last.status.phase == phase
    assert condition(last, "Stalled") == stalled


def test_canary_never_ready_is_rolled_back_at_the_progress_deadline() -> None:
    waiting, deadline = run([Step(10, "c1", {"s1": 2, "c1": 0}), Step(140, "c1", {"s1": 2, "c1": 0})], HEALTHY)
    assert waiting.canary == "c1"
    assert "waiting for canary" in waiting.status.message
    assert deadline.canary is None
    assert "progressDeadlineSeconds" in deadline.status.history[-1].reason
    assert deadline.status.phase == Phase.DEGRADED


def test_canary_kubelet_gave_up_on_is_rolled_back_before_the_deadline() -> None:
    spec = parse_spec(SPEC)
    stuck = Observation(
        generation=1,
        spec=spec,
        spec_problems=(),
        desired_revision="c1",
        action=None,
        revisions={
            "s1": RevisionState(replicas=2, ready=2),
            "c1": RevisionState(replicas=1, ready=0, failures=("pod c1-x: runtime OOMKilled (exit 137), 2 restarts",)),
        },
        analysis=None,
        now=T0 + timedelta(seconds=20),
    )
    waiting = run([Step(10, "c1", {"s1": 2, "c1": 0})], HEALTHY)[-1]
    decision = decide(waiting.status, stuck)
    assert decision.canary is None
    assert decision.weight == 0
    reason = decision.status.history[-1].reason
    assert "cannot start" in reason
    assert "OOMKilled" in reason
    assert decision.status.phase == Phase.DEGRADED


def test_canary_losing_all_pods_mid_step_is_rolled_back() -> None:
    lost = run([Step(20, "c1", {"s1": 2, "c1": 0})], CANARY_AT_STEP_1)[-1]
    assert lost.canary is None
    assert "no ready pods" in lost.status.history[-1].reason


def test_operator_restart_carries_on_from_status() -> None:
    """A new process has only the status: the same observation gives the same decision, nothing new."""
    first = run([Step(20, "c1", {"s1": 2, "c1": 2}, WAIT)], CANARY_AT_STEP_1)[-1]
    again = run([Step(20, "c1", {"s1": 2, "c1": 2}, WAIT)], CANARY_AT_STEP_1)[-1]
    assert first.status == again.status
    assert first.plan == again.plan == {"s1": 2, "c1": 2}
    # and a reconcile with no news changes nothing (and creates no events)
    idle = run([Step(21, "c1", {"s1": 2, "c1": 2})], first.status)[-1]
    assert idle.plan == first.plan
    assert idle.events == ()
    assert idle.status.model_copy(update={"conditions": []}) == first.status.model_copy(
        update={"conditions": []}
    ).model_copy(update={"observed_generation": idle.status.observed_generation})


def test_invalid_spec_keeps_everything_and_says_so() -> None:
    observation = Observation(
        generation=7,
        spec=None,
        spec_problems=("spec.rollout.steps: strictly rising",),
        desired_revision=None,
        action=None,
        revisions={"s1": RevisionState(2, 2), "c1": RevisionState(2, 2)},
        analysis=None,
        now=T0 + timedelta(seconds=20),
    )
    decision = decide(CANARY_AT_STEP_1, observation)
    assert decision.plan == {"s1": 2, "c1": 2}
    assert decision.weight == 10
    assert condition(decision, "InvalidSpec") == ("True", "InvalidSpec")
    assert condition(decision, "Stalled") == ("True", "InvalidSpec")
    assert decision.status.observed_generation == 7
    assert "InvalidSpec" in reasons(decision)
    again = decide(decision.status, observation)
    assert again.events == ()  # said once, not on every reconcile


def test_unknown_action_is_reported_and_consumed() -> None:
    decision = run([Step(20, "c1", {"s1": 2, "c1": 2}, action="yolo")], CANARY_AT_STEP_1)[-1]
    assert "UnknownAction" in reasons(decision)
    assert decision.consume_action
    assert decision.canary == "c1"


@pytest.mark.parametrize("action", ["promote", "abort"])
def test_actions_without_a_canary_do_nothing(action: str) -> None:
    decision = run([Step(20, "s1", {"s1": 2}, action=action)], HEALTHY)[-1]
    assert "NothingToDo" in reasons(decision)
    assert decision.status.phase == Phase.HEALTHY


def test_replicas_mode_approximates_the_weight_with_pods() -> None:
    spec = {**SPEC, "runtime": {"replicas": 4}, "traffic": {"mode": "replicas"}}
    decisions = run(
        [
            Step(10, "c1", {"s1": 4}, spec=spec),
            Step(15, "c1", {"s1": 4, "c1": 1}, spec=spec),
            Step(46, "c1", {"s1": 4, "c1": 1}, PASS, spec=spec),
        ],
        HEALTHY,
    )
    assert decisions[0].plan == {"s1": 4, "c1": 1}  # stable keeps its 4 pods; one canary pod is 20%
    assert decisions[2].plan == {"s1": 4, "c1": 4}  # 50%


def test_analysis_is_due_once_per_interval_during_a_step() -> None:
    spec = parse_spec(SPEC)
    assert analysis_due(CANARY_AT_STEP_1, spec, T0 + timedelta(seconds=16))
    analysed = run([Step(20, "c1", {"s1": 2, "c1": 2}, WAIT)], CANARY_AT_STEP_1)[-1].status
    assert not analysis_due(analysed, spec, T0 + timedelta(seconds=25))
    assert analysis_due(analysed, spec, T0 + timedelta(seconds=30))
    assert not analysis_due(HEALTHY, spec, T0 + timedelta(seconds=30))


def test_replicas_mode_drops_the_replaced_stable_at_once() -> None:
    spec = {
        **SPEC,
        "runtime": {"replicas": 2},
        "traffic": {"mode": "replicas"},
        "rollout": {**SPEC["rollout"], "steps": [{"weight": 50, "pause": "0s"}]},
    }
    promoted = run(
        [
            Step(10, "c1", {"s1": 2}, spec=spec),
            Step(15, "c1", {"s1": 2, "c1": 2}, spec=spec),
            Step(25, "c1", {"s1": 2, "c1": 2}, PASS, spec=spec),
        ],
        HEALTHY,
    )[-1]
    assert promoted.status.stable_revision == "c1"
    assert promoted.plan == {"c1": 2}  # the Service selects every revision: s1 must go with its traffic


def with_evidence(base: Outcome, **evidence: float) -> Outcome:
    return Outcome(base.verdict, base.message, base.metrics, evidence)


def test_evidence_carries_from_a_passed_step_into_the_next_and_ends_with_the_rollout() -> None:
    ready = {"s1": 2, "c1": 2}
    decisions = run(
        [
            Step(10, "c1", {"s1": 2}),
            Step(15, "c1", ready),
            Step(25, "c1", ready, with_evidence(PASS, errorRate=3.0)),  # the pause is not over yet
            Step(46, "c1", ready, with_evidence(PASS, errorRate=4.0, drift=0.5)),  # step 2 begins
            Step(56, "c1", ready, with_evidence(PASS, errorRate=6.0)),
            Step(77, "c1", ready, with_evidence(PASS, errorRate=6.0)),  # promoted
        ],
        HEALTHY,
    )
    assert decisions[2].status.carried_evidence == {}  # within step 1: nothing earlier to carry
    assert decisions[3].status.current_step == 1
    assert decisions[3].status.carried_evidence == {"errorRate": 4.0, "drift": 0.5}  # step 1's last evidence
    assert decisions[4].status.carried_evidence == {"errorRate": 4.0, "drift": 0.5}
    assert decisions[5].rollout_result == "promoted"
    assert decisions[5].status.carried_evidence == {}


def test_a_new_canary_starts_without_evidence() -> None:
    ready = {"s1": 2, "c1": 2}
    steps = [Step(25, "c1", ready, PASS), Step(46, "c1", ready, with_evidence(PASS, errorRate=9.0))]
    at_step_2 = run(steps, CANARY_AT_STEP_1)[-1].status
    assert at_step_2.carried_evidence
    superseded = run([Step(50, "c2", {"s1": 2, "c1": 2})], at_step_2)[-1]
    assert superseded.status.canary_revision == "c2"
    assert superseded.status.carried_evidence == {}


def test_resume_carries_the_evidence_of_the_paused_window() -> None:
    ready = {"s1": 2, "c1": 2}
    decisions = run(
        [
            Step(25, "c1", ready, with_evidence(WAIT, errorRate=20.0)),
            Step(30, "c1", ready, action="pause"),
            Step(90, "c1", ready, action="resume"),
        ],
        CANARY_AT_STEP_1,
    )
    resumed = decisions[-1].status
    assert resumed.step_started_at == T0 + timedelta(seconds=90)
    assert resumed.carried_evidence == {"errorRate": 20.0}


def test_a_rollback_by_the_analysis_keeps_its_evidence_in_the_history() -> None:
    failing = MetricResult(
        name="errorRate", canary=0.3, stable=0.01, verdict=Verdict.FAIL, e_value=1e6, alpha=0.005, reason="errors up"
    )
    bad = Outcome(Verdict.FAIL, "errors up", (failing,), {"errorRate": 1e6})
    rolled_back = run([Step(25, "c1", {"s1": 2, "c1": 2}, bad)], CANARY_AT_STEP_1)[-1]
    entry = rolled_back.status.history[-1]
    assert entry.result.value == "RolledBack"
    assert [m.name for m in entry.analysis] == ["errorRate"]
    assert entry.analysis[0].e_value == 1e6
    assert rolled_back.status.to_api()["history"][-1]["analysis"][0]["eValue"] == 1e6


def test_no_spec_makes_the_operator_look_again_sooner_than_the_floor() -> None:
    """Even a spec that slipped past validation (an interval of 1 ms) requeues no faster than the floor."""
    spec = parse_spec(SPEC)
    fast = spec.model_copy(
        update={
            "rollout": spec.rollout.model_copy(
                update={"analysis": spec.rollout.analysis.model_copy(update={"interval": "1ms"})}
            )
        }
    )
    observation = Observation(
        generation=3,
        spec=fast,
        spec_problems=(),
        desired_revision="c1",
        action=None,
        revisions={"s1": RevisionState(2, 2), "c1": RevisionState(2, 2)},
        analysis=WAIT,
        now=T0 + timedelta(seconds=25),
    )
    decision = decide(CANARY_AT_STEP_1, observation)
    assert decision.canary == "c1"
    assert decision.requeue_after == MIN_REQUEUE_SECONDS


def test_only_what_users_change_wakes_a_loop_at_once() -> None:
    """A status-only change is the operator's own write coming back; a spec, annotation, label or
    deletion change is a user's, and is reconciled at once."""
    from model_operator.reconciler import _user_intent

    body: dict[str, Any] = {
        "metadata": {"uid": "u", "generation": 3, "annotations": {}, "resourceVersion": "10"},
        "status": {"phase": "Healthy"},
    }
    status_only = {**body, "metadata": {**body["metadata"], "resourceVersion": "11"}, "status": {"phase": "Failed"}}
    assert _user_intent(status_only) == _user_intent(body)
    for change in (
        {"generation": 4},
        {"annotations": {"modelship.io/action": "promote"}},
        {"labels": {"team": "a"}},
        {"deletionTimestamp": "2026-01-01T00:00:00Z"},
    ):
        assert _user_intent({**body, "metadata": {**body["metadata"], **change}}) != _user_intent(body), change


# ---- the golden-prompt gate (rollout.validation) ---------------------------------------------------
GATED = with_changes(
    runtime__replicas=2,
    rollout__steps=STEPS,
    rollout__analysis={"interval": "10s", "minRequests": 100, "noDataTimeout": "60s"},
    rollout__progressDeadlineSeconds=120,
    rollout__validation={"prompts": [{"name": "greeting", "prompt": "hello"}]},
)
BOTH = {"s1": 2, "c1": 2}
SAME = Fingerprints(tokenizer="aaaa", config="cccc")
OTHER = Fingerprints(tokenizer="bbbb", config="cccc")


def gate(verdict: Verdict, message: str = "", canary: Fingerprints = SAME, revision: str = "c1") -> ValidationOutcome:
    metric = MetricResult(name="divergence", canary=0.4, verdict=verdict, reason=message, threshold=0.1)
    return ValidationOutcome(
        revision, "s1", verdict, message or verdict.value, (metric,), fingerprints={"s1": SAME, revision: canary}
    )


def gated(*steps: Step) -> list[Decision]:
    return run([dataclasses.replace(step, spec=GATED) for step in steps], HEALTHY)


def test_a_ready_canary_is_validated_at_weight_0_before_its_first_step() -> None:
    created, validating, still, passed = gated(
        Step(10, "c1", {"s1": 2}),
        Step(15, "c1", BOTH),
        Step(16, "c1", BOTH),  # the golden set is still going out
        Step(20, "c1", BOTH, validation=gate(Verdict.PASS, "passed 4 checks")),
    )
    spec = parse_spec(GATED)
    assert not validation_due(created.status, spec, T0 + timedelta(seconds=15))  # not Ready yet
    assert (validating.status.phase, validating.weight, validating.status.current_step) == (Phase.VALIDATING, 0, None)
    assert condition(validating, "Validated") == ("Unknown", "Validating")
    assert condition(validating, "Reconciling") == ("True", "Validating")
    assert condition(validating, "Stalled")[0] == "False"
    assert validation_due(validating.status, spec, T0 + timedelta(seconds=16))
    assert still.weight == 0
    assert "validating canary c1 against stable s1" in still.status.message
    assert (passed.weight, passed.status.current_step) == (10, 0)
    assert "ValidationPassed" in reasons(passed)
    assert condition(passed, "Validated") == ("True", "ValidationPassed")
    assert condition(passed, "TokenizerChanged") == ("False", "SameTokenizer")
    assert passed.status.fingerprints == {"s1": SAME, "c1": SAME}
    assert not validation_due(passed.status, spec, T0 + timedelta(seconds=30))


def test_a_canary_failing_validation_is_rolled_back_without_ever_getting_weight() -> None:
    decisions = gated(
        Step(10, "c1", {"s1": 2}),
        Step(15, "c1", BOTH),
        Step(20, "c1", BOTH, validation=gate(Verdict.FAIL, "divergence: worst prompt greeting diverges 0.400")),
        Step(25, "c1", BOTH),
    )
    assert max(d.weight for d in decisions) == 0
    failed, after = decisions[2:]
    assert failed.rollout_result == "rolled_back"
    assert "RolledBack" in reasons(failed)
    assert after.status.phase == Phase.DEGRADED
    assert condition(after, "Validated") == ("False", "ValidationFailed")
    last = after.status.history[-1]
    assert (last.revision, last.result.value) == ("c1", "RolledBack")
    assert last.reason.startswith("validation failed: divergence")
    assert [m.name for m in last.analysis] == ["divergence"]
    assert after.status.validation is not None
    assert after.status.validation.verdict == Verdict.FAIL


def test_a_validation_that_cannot_run_holds_the_canary_and_says_why() -> None:
    blocked = gate(Verdict.ERROR, "ConfigMap default/golden not found")
    decisions = gated(
        Step(10, "c1", {"s1": 2}),
        Step(15, "c1", BOTH),
        Step(20, "c1", BOTH, validation=blocked),
        Step(36, "c1", BOTH, validation=blocked),  # retried: the same failure, no second event
        Step(200, "c1", BOTH),  # far past the progress deadline: still held, never rolled back
        Step(210, "c1", BOTH, validation=gate(Verdict.PASS)),
    )
    first, again, later, passed = decisions[2:]
    spec = parse_spec(GATED)
    for held in (first, again, later):
        assert (held.status.phase, held.weight, held.canary) == (Phase.VALIDATING, 0, "c1")
        assert condition(held, "Stalled") == ("True", "ValidationBlocked")
        assert condition(held, "Validated") == ("Unknown", "ValidationBlocked")
        assert "ConfigMap default/golden not found" in held.status.message
        assert held.rollout_result is None
    assert reasons(first).count("ValidationBlocked") == 1
    assert "ValidationBlocked" not in reasons(again)
    assert not validation_due(first.status, spec, T0 + timedelta(seconds=30))  # retried after 15 s
    assert validation_due(first.status, spec, T0 + timedelta(seconds=36))
    assert (passed.weight, passed.status.phase) == (10, Phase.PROGRESSING)


def test_a_tokenizer_change_is_flagged_and_passes_only_when_validation_passes_it() -> None:
    *_, changed = gated(
        Step(10, "c1", {"s1": 2}),
        Step(15, "c1", BOTH),
        Step(20, "c1", BOTH, validation=gate(Verdict.PASS, canary=OTHER)),
    )
    assert "TokenizerChanged" in reasons(changed)
    assert condition(changed, "TokenizerChanged") == ("True", "TokenizerChanged")
    assert changed.weight == 10


def test_a_verdict_about_another_canary_is_not_taken() -> None:
    *_, stale = gated(
        Step(10, "c1", {"s1": 2}),
        Step(15, "c1", BOTH),
        Step(20, "c1", BOTH, validation=gate(Verdict.PASS, revision="c0")),
    )
    assert (stale.status.phase, stale.weight) == (Phase.VALIDATING, 0)


def test_without_validation_a_ready_canary_goes_straight_to_its_first_step() -> None:
    _created, step1 = run([Step(10, "c1", {"s1": 2}), Step(15, "c1", BOTH)], HEALTHY)
    assert step1.weight == 10
    assert condition(step1, "Validated") == ("Unknown", "NotRequired")
