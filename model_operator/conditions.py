"""kstatus conditions from the rollout's state, with named reasons.

kstatus (what Flux and Argo CD read): a resource is Current when status.observedGeneration equals
metadata.generation, Ready is True and neither Reconciling nor Stalled is True; InProgress while
Reconciling is True; Failed while Stalled is True. A transition time only moves when a status flips.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from .api.status import Condition, Phase, Verdict

READY = "Ready"
RECONCILING = "Reconciling"
STALLED = "Stalled"
UP_TO_DATE = "UpToDate"
PROGRESSING = "Progressing"
ANALYSIS_PASSING = "AnalysisPassing"
ROLLED_BACK = "RolledBack"
INVALID_SPEC = "InvalidSpec"
VALIDATED = "Validated"
TOKENIZER_CHANGED = "TokenizerChanged"
CONDITION_TYPES = (
    READY,
    RECONCILING,
    STALLED,
    UP_TO_DATE,
    PROGRESSING,
    ANALYSIS_PASSING,
    ROLLED_BACK,
    INVALID_SPEC,
    VALIDATED,
    TOKENIZER_CHANGED,
)


class Reason:
    HEALTHY = "Healthy"
    ROLLOUT_IN_PROGRESS = "RolloutInProgress"
    WAITING_FOR_PODS = "WaitingForPods"
    WAITING_FOR_CANARY = "WaitingForCanary"
    CANARY_STEP = "CanaryStep"
    PAUSED = "Paused"
    ANALYSIS_BLIND = "AnalysisBlind"
    ROLLED_BACK = "RolledBack"
    INVALID_SPEC = "InvalidSpec"
    VALID_SPEC = "ValidSpec"
    PROGRESS_DEADLINE_EXCEEDED = "ProgressDeadlineExceeded"
    DESIRED_REVISION_SERVING = "DesiredRevisionServing"
    IDLE = "Idle"
    NOT_RUNNING = "NotRunning"
    NOT_ROLLED_BACK = "NotRolledBack"
    VALIDATING = "Validating"
    VALIDATION_PASSED = "ValidationPassed"
    VALIDATION_FAILED = "ValidationFailed"
    VALIDATION_BLOCKED = "ValidationBlocked"
    NOT_REQUIRED = "NotRequired"
    TOKENIZER_CHANGED = "TokenizerChanged"
    SAME_TOKENIZER = "SameTokenizer"
    NOT_MEASURED = "NotMeasured"


Status = Literal["True", "False", "Unknown"]
Triple = tuple[Status, str, str]  # a condition's status, reason and message


@dataclass(frozen=True)
class Situation:
    """Everything the conditions depend on."""

    phase: Phase
    invalid_spec: str | None
    stalled_reason: str | None  # why the rollout cannot go on without help, if it cannot
    message: str
    up_to_date: bool
    canary_active: bool
    waiting_for_pods: bool
    verdict: Verdict | None
    rolled_back: bool
    rollback_reason: str
    validating: bool = False  # a Ready canary answers the golden set at weight 0
    validated: Triple = ("Unknown", Reason.NOT_REQUIRED, "")
    tokenizer: Triple = ("Unknown", Reason.NOT_MEASURED, "")


ANALYSIS_STATUS: dict[Verdict, tuple[Status, str]] = {
    Verdict.PASS: ("True", "Pass"),
    Verdict.FAIL: ("False", "Fail"),
    Verdict.INCONCLUSIVE: ("Unknown", "Inconclusive"),
    Verdict.NO_DATA: ("Unknown", "NoData"),
    Verdict.ERROR: ("Unknown", "QueryError"),
}


def _analysis(situation: Situation) -> tuple[Status, str]:
    if not situation.canary_active or situation.verdict is None:
        return "Unknown", Reason.NOT_RUNNING
    return ANALYSIS_STATUS[situation.verdict]


def desired(situation: Situation) -> list[tuple[str, Status, str, str]]:
    """(type, status, reason, message) for every condition."""
    s = situation
    message = s.message
    stalled: tuple[Status, str]
    if s.invalid_spec:
        stalled = ("True", Reason.INVALID_SPEC)
    elif s.stalled_reason:
        stalled = ("True", s.stalled_reason)
    else:
        stalled = ("False", Reason.IDLE)
    reconciling_reason = (
        Reason.PAUSED
        if s.phase == Phase.PAUSED
        else Reason.VALIDATING
        if s.validating
        else Reason.WAITING_FOR_PODS
        if s.waiting_for_pods
        else Reason.ROLLOUT_IN_PROGRESS
    )
    reconciling = s.canary_active or s.phase == Phase.PROGRESSING
    ready = s.phase == Phase.HEALTHY and not s.invalid_spec
    ready_reason = (
        Reason.HEALTHY
        if ready
        else (
            Reason.INVALID_SPEC
            if s.invalid_spec
            else Reason.ROLLED_BACK
            if s.phase == Phase.DEGRADED
            else Reason.PROGRESS_DEADLINE_EXCEEDED
            if s.phase == Phase.FAILED
            else reconciling_reason
        )
    )
    progressing_reason = (
        Reason.PAUSED
        if s.phase == Phase.PAUSED
        else Reason.VALIDATING
        if s.validating
        else Reason.WAITING_FOR_CANARY
        if s.canary_active and s.waiting_for_pods
        else Reason.CANARY_STEP
        if s.canary_active
        else Reason.WAITING_FOR_PODS
        if s.phase == Phase.PROGRESSING
        else Reason.IDLE
    )
    analysis_status, analysis_reason = _analysis(s)
    return [
        (READY, "True" if ready else "False", ready_reason, message),
        (
            RECONCILING,
            "True" if reconciling and stalled[0] != "True" else "False",
            reconciling_reason if reconciling else Reason.IDLE,
            message if reconciling else "",
        ),
        (STALLED, stalled[0], stalled[1], message if stalled[0] == "True" else ""),
        (
            UP_TO_DATE,
            "True" if s.up_to_date else "False",
            Reason.DESIRED_REVISION_SERVING
            if s.up_to_date
            else (Reason.ROLLED_BACK if s.phase == Phase.DEGRADED else Reason.ROLLOUT_IN_PROGRESS),
            "",
        ),
        (PROGRESSING, "True" if s.canary_active and s.phase != Phase.PAUSED else "False", progressing_reason, ""),
        (ANALYSIS_PASSING, analysis_status, analysis_reason, ""),
        (
            ROLLED_BACK,
            "True" if s.rolled_back else "False",
            Reason.ROLLED_BACK if s.rolled_back else Reason.NOT_ROLLED_BACK,
            s.rollback_reason if s.rolled_back else "",
        ),
        (
            INVALID_SPEC,
            "True" if s.invalid_spec else "False",
            Reason.INVALID_SPEC if s.invalid_spec else Reason.VALID_SPEC,
            s.invalid_spec or "",
        ),
        (VALIDATED, *s.validated),
        (TOKENIZER_CHANGED, *s.tokenizer),
    ]


def conditions(situation: Situation, previous: list[Condition], generation: int, now: datetime) -> list[Condition]:
    """The conditions for `situation`, keeping each one's transition time unless its status changed."""
    before = {c.type: c for c in previous}
    result = []
    for kind, status, reason, message in desired(situation):
        old = before.get(kind)
        moved = old is None or old.status != status
        result.append(
            Condition(
                type=kind,
                status=status,
                reason=reason,
                message=message,
                last_transition_time=now if moved or old is None else old.last_transition_time,
                observed_generation=generation,
            )
        )
    return result


def with_apply_failure(
    conditions_now: list[Condition], message: str, now: datetime, before: list[Condition] | None = None
) -> list[Condition]:
    """The conditions when the children could not be applied (a missing API, a denied permission): it will
    not fix itself, so Stalled, and not Ready. A failure already recorded in `before` (the stored
    conditions) keeps its transition time, so retrying the same failure writes nothing new."""
    failed = {STALLED: ("True", "ApplyFailed"), READY: ("False", "ApplyFailed")}
    recorded = {c.type: c for c in before or []}
    result = []
    for condition in conditions_now:
        if condition.type not in failed:
            result.append(condition)
            continue
        status, reason = failed[condition.type]
        earlier = recorded.get(condition.type)
        base = earlier if earlier is not None and (earlier.status, earlier.reason) == (status, reason) else condition
        moved = base.status != status
        result.append(
            base.model_copy(
                update={
                    "status": status,
                    "reason": reason,
                    "message": message,
                    "last_transition_time": now if moved else base.last_transition_time,
                }
            )
        )
    return result
