"""The rollout brain: (previous status, observation) -> decision. Pure: no API calls, no clock, no
Prometheus; the handler gathers the observation and applies the decision.

    Healthy --new revision--> Progressing(step i) --step passed--> ... --last step passed--> Healthy
    Progressing --no data / query errors--> Paused (weight held) --noDataTimeout--> per onNoData
    Progressing --regression / progress deadline / abort--> weight 0 --> Degraded (RolledBack)
    with rollout.validation: canary Ready --> Validating (weight 0) --golden set passes--> step 0
                                               Validating --fails--> Degraded (RolledBack, weight never > 0)
                                               Validating --cannot run--> held at weight 0, Stalled
    Degraded --spec changes or retry--> Progressing
    any state --spec changes--> drop the in-flight canary, start again at step 0 (stable untouched)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from .analysis import Outcome
from .api.durations import parse_duration
from .api.spec import ModelDeploymentSpec
from .api.status import (
    AnalysisRecord,
    HistoryEntry,
    HistoryResult,
    MetricResult,
    ModelDeploymentStatus,
    Phase,
    RetiringRevision,
    ValidationRecord,
    Verdict,
)
from .conditions import Reason, Situation, Triple, conditions
from .golden import ValidationOutcome, tokenizer_change
from .traffic import traffic_for

HISTORY_LIMIT = 10
ACTIONS = ("promote", "abort", "retry", "pause", "resume")
WAITING_REQUEUE_SECONDS = 5.0
# A validation that could not run (stable unreachable, the golden ConfigMap missing) is tried again this
# often, the canary held at weight 0 meanwhile.
VALIDATION_RETRY_SECONDS = 15.0
# However a spec reads, the operator never looks again sooner than this: no spec makes it spin.
MIN_REQUEUE_SECONDS = 0.5


@dataclass(frozen=True)
class RevisionState:
    """A revision's Deployment as observed: the replicas it asks for, how many are ready, and why pods
    that are not cannot start (podhealth.pod_failures)."""

    replicas: int
    ready: int
    failures: tuple[str, ...] = ()


@dataclass(frozen=True)
class Observation:
    generation: int
    spec: ModelDeploymentSpec | None
    spec_problems: tuple[str, ...]
    desired_revision: str | None
    action: str | None
    revisions: Mapping[str, RevisionState]
    analysis: Outcome | None
    now: datetime
    scale_down_delay_seconds: float = 30.0
    validation: ValidationOutcome | None = None


@dataclass(frozen=True)
class Event:
    kind: str  # Normal or Warning
    reason: str
    message: str


@dataclass(frozen=True)
class Decision:
    status: ModelDeploymentStatus
    plan: dict[str, int]  # every revision that should exist, and its replicas
    stable: str | None
    canary: str | None
    weight: int
    events: tuple[Event, ...]
    consume_action: bool
    rollout_result: str | None  # promoted, rolled_back or aborted, when a rollout ended
    requeue_after: float


@dataclass
class _Work:
    """A mutable copy of the status fields the decision moves."""

    status: ModelDeploymentStatus
    now: datetime
    events: list[Event] = field(default_factory=list)
    result: str | None = None
    scale_down_delay: float = 30.0

    def __post_init__(self) -> None:
        s = self.status
        self.stable, self.canary, self.aborted = s.stable_revision, s.canary_revision, s.aborted_revision
        self.weight, self.step = s.canary_weight, s.current_step
        self.step_started_at, self.rollout_started_at = s.step_started_at, s.rollout_started_at
        self.blind_since, self.aborted_at = s.blind_since, s.aborted_at
        self.user_paused = s.user_paused
        self.retiring = list(s.retiring)
        self.history = list(s.history)
        self.last_analysis = s.last_analysis
        self.carried = dict(s.carried_evidence)
        self.validation = s.validation
        self.fingerprints = dict(s.fingerprints)
        self.validating = False  # the canary is Ready and answers the golden set before any weight
        self.message = ""
        self.rollback_reason = next(
            (
                h.reason
                for h in reversed(self.history)
                if h.result in (HistoryResult.ROLLED_BACK, HistoryResult.ABORTED)
            ),
            "",
        )

    def event(self, kind: str, reason: str, message: str) -> None:
        self.events.append(Event(kind, reason, message))

    def remember(
        self,
        revision: str,
        result: HistoryResult,
        reason: str,
        started: datetime | None,
        evidence: Sequence[MetricResult] = (),
    ) -> None:
        entry = HistoryEntry(
            revision=revision,
            result=result,
            started_at=started,
            finished_at=self.now,
            reason=reason,
            analysis=list(evidence),
        )
        self.history = [*self.history, entry][-HISTORY_LIMIT:]

    def start_canary(self, revision: str) -> None:
        self.canary, self.weight, self.step = revision, 0, None
        self.step_started_at, self.blind_since, self.last_analysis = None, None, None
        self.carried = {}
        self.rollout_started_at = self.now
        self.event("Normal", "RolloutStarted", f"canary {revision} started against stable {self.stable}")

    def promote(self, why: str) -> None:
        assert self.canary is not None
        if self.stable and self.stable != self.canary:
            until = self.now + timedelta(seconds=self.scale_down_delay)
            self.retiring = [r for r in self.retiring if r.revision != self.stable]
            self.retiring.append(RetiringRevision(revision=self.stable, until=until))
        self.remember(self.canary, HistoryResult.PROMOTED, why, self.rollout_started_at)
        self.event("Normal", "Promoted", f"{self.canary} is stable: {why}")
        self.stable, self.canary, self.weight, self.step = self.canary, None, 0, None
        self.step_started_at, self.blind_since, self.rollout_started_at = None, None, None
        self.result = "promoted"

    def roll_back(self, why: str, by_user: bool = False, evidence: Sequence[MetricResult] = ()) -> None:
        assert self.canary is not None
        result = HistoryResult.ABORTED if by_user else HistoryResult.ROLLED_BACK
        self.remember(self.canary, result, why, self.rollout_started_at, evidence)
        self.event("Warning", "RolledBack", f"{self.canary} rolled back at weight {self.weight}: {why}")
        self.aborted, self.aborted_at, self.rollback_reason = self.canary, self.now, why
        self.canary, self.weight, self.step = None, 0, None
        self.step_started_at, self.blind_since, self.rollout_started_at = None, None, None
        self.result = "aborted" if by_user else "rolled_back"


def _elapsed(since: datetime | None, now: datetime) -> float:
    return (now - since).total_seconds() if since else 0.0


def analysis_due(status: ModelDeploymentStatus, spec: ModelDeploymentSpec, now: datetime) -> bool:
    """Whether the handler should query Prometheus before deciding."""
    if status.canary_revision is None or status.current_step is None or status.step_started_at is None:
        return False
    if spec.paused or status.user_paused:
        return False
    last = status.last_analysis
    if last is None or last.step != status.current_step or last.time < status.step_started_at:
        return True
    return _elapsed(last.time, now) >= parse_duration(spec.rollout.analysis.interval)


def analysis_window_seconds(status: ModelDeploymentStatus, spec: ModelDeploymentSpec, now: datetime) -> float:
    """The analysis looks at everything since the step started (at least one interval)."""
    interval = parse_duration(spec.rollout.analysis.interval)
    return max(_elapsed(status.step_started_at, now), interval)


def decide(previous: ModelDeploymentStatus, observation: Observation) -> Decision:
    now = observation.now
    work = _Work(previous, now)
    work.scale_down_delay = observation.scale_down_delay_seconds
    spec = observation.spec
    if spec is None or observation.desired_revision is None:
        return _invalid(work, observation)
    desired = observation.desired_revision
    consume = observation.action is not None
    action = observation.action if observation.action in ACTIONS else None
    if observation.action is not None and action is None:
        work.event(
            "Warning",
            "UnknownAction",
            f"ignored modelship.io/action={observation.action!r}; use one of {', '.join(ACTIONS)}",
        )
    _apply_pause_actions(work, action)
    if action == "retry":
        if work.aborted == desired and work.canary is None:
            work.aborted = None
            work.event("Normal", "Retry", f"retrying {desired} at a user's request")
        else:
            work.event("Normal", "NothingToRetry", "retry ignored: no rolled-back revision is desired")
    work.retiring = [r for r in work.retiring if r.until > now and r.revision not in (desired, work.stable)]

    if work.stable is None:
        work.stable, work.rollout_started_at = desired, now
        work.remember(desired, HistoryResult.DEPLOYED, "first revision", now)
        work.event("Normal", "Deploying", f"first revision {desired}")
    elif desired == work.stable and work.canary is not None:
        work.remember(
            work.canary, HistoryResult.SUPERSEDED, "the spec went back to the stable revision", work.rollout_started_at
        )
        work.event("Normal", "Superseded", f"canary {work.canary} dropped: the spec matches stable {desired} again")
        work.canary, work.weight, work.step, work.step_started_at, work.blind_since = None, 0, None, None, None
        work.rollout_started_at = None
    elif desired not in (work.stable, work.canary) and desired != work.aborted:
        if work.canary is not None:
            work.remember(
                work.canary,
                HistoryResult.SUPERSEDED,
                f"the spec changed to {desired} mid-rollout",
                work.rollout_started_at,
            )
            work.event("Normal", "Superseded", f"canary {work.canary} dropped for {desired}; stable untouched")
        work.start_canary(desired)

    stalled_reason: str | None = None
    if work.canary is not None:
        stalled_reason = _advance_canary(work, spec, observation, action)
    elif action in ("promote", "abort"):
        work.event("Normal", "NothingToDo", f"{action} ignored: no canary is in progress")

    phase = _phase(work, spec, observation, stalled_reason)
    if phase == Phase.FAILED:
        stalled_reason = Reason.PROGRESS_DEADLINE_EXCEEDED
    elif phase == Phase.DEGRADED:
        stalled_reason = Reason.ROLLED_BACK  # it will not go on by itself: the spec must change, or a retry
    if phase == Phase.HEALTHY:
        work.rollout_started_at = None
    plan = _plan(work, spec, observation)
    stable_state = observation.revisions.get(work.stable or "")
    canary_state = observation.revisions.get(work.canary or "")
    validated, tokenizer = _validation_conditions(work, spec, desired)
    situation = Situation(
        phase=phase,
        invalid_spec=None,
        stalled_reason=stalled_reason,
        message=work.message,
        up_to_date=work.stable == desired and work.canary is None,
        canary_active=work.canary is not None,
        waiting_for_pods=(work.canary is not None and work.step is None)
        or (phase == Phase.PROGRESSING and work.canary is None),
        verdict=work.last_analysis.verdict if work.last_analysis and work.canary else None,
        rolled_back=work.aborted is not None and work.aborted == desired,
        rollback_reason=work.rollback_reason,
        validating=work.validating,
        validated=validated,
        tokenizer=tokenizer,
    )
    status = ModelDeploymentStatus(
        observed_generation=observation.generation,
        phase=phase,
        message=work.message,
        desired_revision=desired,
        stable_revision=work.stable,
        canary_revision=work.canary,
        aborted_revision=work.aborted,
        canary_weight=work.weight,
        current_step=work.step,
        step_started_at=work.step_started_at,
        rollout_started_at=work.rollout_started_at,
        blind_since=work.blind_since,
        aborted_at=work.aborted_at,
        user_paused=work.user_paused,
        retiring=work.retiring,
        stable_ready_replicas=stable_state.ready if stable_state else 0,
        canary_ready_replicas=canary_state.ready if canary_state else 0,
        last_analysis=work.last_analysis,
        validation=work.validation,
        fingerprints={r: f for r, f in work.fingerprints.items() if r in plan or r in (work.stable, work.canary)},
        carried_evidence=work.carried if work.canary is not None else {},
        history=work.history,
        conditions=conditions(situation, previous.conditions, observation.generation, now),
    )
    return Decision(
        status=status,
        plan=plan,
        stable=work.stable,
        canary=work.canary,
        weight=work.weight,
        events=tuple(work.events),
        consume_action=consume,
        rollout_result=work.result,
        requeue_after=_requeue(work, spec, now),
    )


def _apply_pause_actions(work: _Work, action: str | None) -> None:
    if action == "pause" and not work.user_paused:
        work.user_paused = True
        work.event("Normal", "Paused", "rollout paused by a user; weights hold until resume")
    elif action == "resume" and work.user_paused:
        work.user_paused = False
        if work.step is not None:
            work.step_started_at = work.now  # counts start afresh from the resume; the evidence so far carries
            last = work.last_analysis
            if last is not None and last.step == work.step:
                work.carried = dict(last.evidence)
        work.event("Normal", "Resumed", "rollout resumed by a user")


def _advance_canary(work: _Work, spec: ModelDeploymentSpec, observation: Observation, action: str | None) -> str | None:
    """Move the in-flight canary on; returns a stalled reason when it cannot go on by itself."""
    assert work.canary is not None
    now, rollout = work.now, spec.rollout
    state = observation.revisions.get(work.canary)
    ready = state.ready if state else 0
    steps = rollout.steps
    if action == "abort":
        work.roll_back("aborted by a user", by_user=True)
        return None
    if action == "promote":
        work.promote("promoted by a user")
        return None
    if work.step is None:
        needed = traffic_for(spec).replicas(spec.runtime.replicas, steps[0].weight)[1]
        if ready >= max(1, needed):
            if rollout.validation is not None and not _validated(work):
                stalled = _validate(work, observation.validation)
                if not _validated(work):
                    return stalled
            work.step, work.weight, work.step_started_at = 0, steps[0].weight, now
            work.event("Normal", "StepStarted", f"step 1/{len(steps)}: canary {work.canary} at {work.weight}%")
        elif state is not None and state.failures:
            # kubelet has given up on it (a crash loop, an OOM kill at start, an image it cannot get): the
            # deadline would only delay the same end.
            work.roll_back(f"canary {work.canary} cannot start: {'; '.join(state.failures[:3])}")
            return None
        elif _elapsed(work.rollout_started_at, now) > rollout.progress_deadline_seconds:
            work.roll_back(f"canary not ready within progressDeadlineSeconds ({rollout.progress_deadline_seconds}s)")
            return None
        else:
            work.message = f"waiting for canary {work.canary} pods ({ready}/{max(1, needed)} ready)"
            return None
    if spec.paused or work.user_paused:
        work.message = f"paused at step {work.step + 1}/{len(steps)}, canary at {work.weight}%"
        return None
    if ready == 0:
        work.roll_back(f"canary {work.canary} has no ready pods")
        return None
    outcome = observation.analysis
    if outcome is not None:
        work.last_analysis = AnalysisRecord(
            time=now,
            step=work.step,
            verdict=outcome.verdict,
            message=outcome.message,
            metrics=list(outcome.metrics),
            evidence=dict(outcome.evidence),
        )
        stalled = _judge(work, spec, outcome)
        if work.canary is None or stalled:
            return stalled
    last = work.last_analysis
    step = steps[work.step]
    step_over = _elapsed(work.step_started_at, now) >= parse_duration(step.pause)
    passed = (
        last is not None
        and last.step == work.step
        and last.verdict == Verdict.PASS
        and work.step_started_at is not None
        and last.time >= work.step_started_at
    )
    if passed and step_over and work.blind_since is None:
        assert last is not None
        if work.step + 1 < len(steps):
            work.carried = dict(last.evidence)  # the next step's evidence multiplies this step's
            work.step += 1
            work.weight, work.step_started_at = steps[work.step].weight, now
            work.event(
                "Normal", "StepStarted", f"step {work.step + 1}/{len(steps)}: canary {work.canary} at {work.weight}%"
            )
        else:
            work.promote(f"passed all {len(steps)} steps")
            return None
    if work.canary is not None and not work.message:
        verdict = last.message if last is not None and last.step == work.step else "waiting for the first analysis"
        work.message = f"step {work.step + 1}/{len(steps)}, canary at {work.weight}%: {verdict}"
    return None


def _validated(work: _Work) -> bool:
    record = work.validation
    return (
        record is not None
        and record.revision == work.canary
        and record.against == work.stable
        and record.verdict == Verdict.PASS
    )


def _validate(work: _Work, outcome: ValidationOutcome | None) -> str | None:
    """The golden-set gate of a Ready canary at weight 0; returns a stalled reason while it cannot run."""
    canary, stable = work.canary, work.stable
    assert canary is not None
    assert stable is not None
    previous = work.validation
    if outcome is not None and (outcome.canary, outcome.stable) == (canary, stable):
        work.validation = ValidationRecord(
            revision=canary,
            against=stable,
            time=work.now,
            verdict=outcome.verdict,
            message=outcome.message,
            metrics=list(outcome.metrics),
            worst_prompts=list(outcome.worst),
        )
        work.fingerprints.update(outcome.fingerprints)
        if outcome.tokenizer_changed:
            old, new = outcome.fingerprints[stable].tokenizer, outcome.fingerprints[canary].tokenizer
            work.event(
                "Warning",
                "TokenizerChanged",
                f"canary {canary} tokenizes differently from stable {stable}: {new} != {old}",
            )
        if outcome.verdict == Verdict.PASS:
            work.event("Normal", "ValidationPassed", f"canary {canary} passed validation: {outcome.message}")
            return None
        if outcome.verdict == Verdict.FAIL:
            work.roll_back(f"validation failed: {outcome.message}", evidence=outcome.metrics)
            return None
        if previous is None or (previous.revision, previous.verdict, previous.message) != (
            canary,
            Verdict.ERROR,
            outcome.message,
        ):
            work.event("Warning", "ValidationBlocked", f"canary {canary} held at weight 0: {outcome.message}")
    work.validating = True
    record = work.validation
    if record is not None and (record.revision, record.against, record.verdict) == (canary, stable, Verdict.ERROR):
        work.message = f"validation of canary {canary} cannot run; held at weight 0: {record.message}"
        return Reason.VALIDATION_BLOCKED
    work.message = f"validating canary {canary} against stable {stable} on the golden set, at weight 0"
    return None


def validation_due(status: ModelDeploymentStatus, spec: ModelDeploymentSpec, now: datetime) -> bool:
    """Whether the handler should send the golden set before deciding: the last decision left the canary
    Validating, and it has no verdict yet (or only one that could not run, long enough ago)."""
    if spec.rollout.validation is None or status.phase != Phase.VALIDATING or status.current_step is not None:
        return False
    if status.canary_revision is None or status.stable_revision is None:
        return False
    record = status.validation
    if record is None or (record.revision, record.against) != (status.canary_revision, status.stable_revision):
        return True
    return record.verdict == Verdict.ERROR and _elapsed(record.time, now) >= VALIDATION_RETRY_SECONDS


def _validation_conditions(work: _Work, spec: ModelDeploymentSpec, desired: str) -> tuple[Triple, Triple]:
    """(Validated, TokenizerChanged) as (status, reason, message)."""
    record = work.validation
    tokenizer: Triple = ("Unknown", Reason.NOT_MEASURED, "")
    if record is not None:
        old, new = work.fingerprints.get(record.against), work.fingerprints.get(record.revision)
        changed = tokenizer_change(old, new)
        if changed is not None:
            assert old is not None
            assert new is not None
            tokenizer = (
                (
                    "True",
                    Reason.TOKENIZER_CHANGED,
                    f"{record.revision}: {new.tokenizer}, {record.against}: {old.tokenizer}",
                )
                if changed
                else ("False", Reason.SAME_TOKENIZER, "")
            )
    if spec.rollout.validation is None:
        return ("Unknown", Reason.NOT_REQUIRED, ""), tokenizer
    current = record is not None and record.revision in (work.canary, desired)
    if record is None or not current:
        validated: Triple = ("Unknown", Reason.VALIDATING if work.validating else Reason.NOT_RUNNING, "")
    elif record.verdict == Verdict.PASS:
        validated = ("True", Reason.VALIDATION_PASSED, record.message)
    elif record.verdict == Verdict.FAIL:
        validated = ("False", Reason.VALIDATION_FAILED, record.message)
    else:
        validated = ("Unknown", Reason.VALIDATION_BLOCKED, record.message)
    return validated, tokenizer


def _judge(work: _Work, spec: ModelDeploymentSpec, outcome: Outcome) -> str | None:
    analysis = spec.rollout.analysis
    if outcome.verdict == Verdict.FAIL:
        work.roll_back(f"analysis failed: {outcome.message}", evidence=outcome.metrics)
        return None
    if outcome.verdict in (Verdict.ERROR, Verdict.NO_DATA):
        if work.blind_since is None:
            work.blind_since = work.now
            work.event("Warning", "AnalysisBlind", f"holding weight {work.weight}%: {outcome.message}")
        blind_for = _elapsed(work.blind_since, work.now)
        budget = parse_duration(analysis.no_data_timeout)
        if blind_for > budget:
            if analysis.on_no_data == "rollback":
                work.roll_back(f"no analysis data for {blind_for:.0f}s (onNoData: rollback): {outcome.message}")
                return None
            work.message = f"blind for {blind_for:.0f}s, past noDataTimeout; holding at {work.weight}%"
            return Reason.ANALYSIS_BLIND
        work.message = f"analysis blind for {blind_for:.0f}s, holding at {work.weight}%: {outcome.message}"
        return None
    if work.blind_since is not None:
        work.event("Normal", "AnalysisRecovered", "analysis data is back; the rollout goes on")
        work.blind_since = None
    return None


def _phase(work: _Work, spec: ModelDeploymentSpec, observation: Observation, stalled: str | None) -> Phase:
    if work.canary is not None:
        if work.validating:
            return Phase.VALIDATING
        if spec.paused or work.user_paused or work.blind_since is not None or stalled:
            return Phase.PAUSED
        return Phase.PROGRESSING
    if work.aborted is not None and work.aborted == observation.desired_revision:
        work.message = (
            work.message or f"rolled back {work.aborted}: {work.rollback_reason}; stable {work.stable} serves"
        )
        return Phase.DEGRADED
    state = observation.revisions.get(work.stable or "")
    ready = state.ready if state else 0
    if ready >= spec.runtime.replicas:
        work.message = work.message or f"{work.stable} serving with {ready} ready pods"
        return Phase.HEALTHY
    if (
        work.rollout_started_at is not None
        and _elapsed(work.rollout_started_at, work.now) > spec.rollout.progress_deadline_seconds
    ):
        work.message = f"{work.stable} not ready within progressDeadlineSeconds ({ready}/{spec.runtime.replicas} ready)"
        return Phase.FAILED
    work.message = work.message or f"waiting for {work.stable} pods ({ready}/{spec.runtime.replicas} ready)"
    return Phase.PROGRESSING


def _plan(work: _Work, spec: ModelDeploymentSpec, observation: Observation) -> dict[str, int]:
    traffic = traffic_for(spec)
    total = spec.runtime.replicas
    plan: dict[str, int] = {}
    if traffic.keeps_idle_pods():
        for retiring in work.retiring:
            plan[retiring.revision] = total
    if (
        work.aborted
        and work.aborted != work.stable
        and traffic.keeps_idle_pods()
        and _elapsed(work.aborted_at, work.now) < spec.rollout.abort_scale_down_delay_seconds
    ):
        plan[work.aborted] = total
    if work.canary is None:
        if work.stable:
            plan[work.stable] = total
        return plan
    weight = work.weight if work.step is not None else spec.rollout.steps[0].weight
    stable_pods, canary_pods = traffic.replicas(total, weight)
    if work.stable:
        plan[work.stable] = max(stable_pods, 1)
    plan[work.canary] = max(canary_pods, 1)
    return plan


def _requeue(work: _Work, spec: ModelDeploymentSpec, now: datetime) -> float:
    candidates = [WAITING_REQUEUE_SECONDS * 6]
    if work.canary is not None:
        candidates.append(parse_duration(spec.rollout.analysis.interval))
        if work.step is None:
            candidates.append(1.0)
    candidates += [max(0.5, (r.until - now).total_seconds()) for r in work.retiring]
    if work.aborted_at is not None:
        left = spec.rollout.abort_scale_down_delay_seconds - _elapsed(work.aborted_at, now)
        if left > 0:
            candidates.append(max(0.5, left))
    return max(MIN_REQUEUE_SECONDS, min(candidates))


def _invalid(work: _Work, observation: Observation) -> Decision:
    """A spec the operator cannot act on: report it, keep everything running exactly as it is."""
    previous = work.status
    problems = "; ".join(observation.spec_problems) or "invalid spec"
    message = f"invalid spec, nothing changed: {problems}"
    if previous.conditions and any(
        c.type == "InvalidSpec" and c.status == "True" and c.message == problems for c in previous.conditions
    ):
        events: tuple[Event, ...] = ()
    else:
        events = (Event("Warning", "InvalidSpec", message),)
    situation = Situation(
        phase=previous.phase,
        invalid_spec=problems,
        stalled_reason=Reason.INVALID_SPEC,
        message=message,
        up_to_date=False,
        canary_active=previous.canary_revision is not None,
        waiting_for_pods=False,
        verdict=None,
        rolled_back=False,
        rollback_reason="",
    )
    status = previous.model_copy(
        update={
            "observed_generation": observation.generation,
            "message": message,
            "conditions": conditions(situation, previous.conditions, observation.generation, observation.now),
        }
    )
    plan = {revision: state.replicas for revision, state in observation.revisions.items()}
    return Decision(
        status=status,
        plan=plan,
        stable=previous.stable_revision,
        canary=previous.canary_revision,
        weight=previous.canary_weight,
        events=events,
        consume_action=False,
        rollout_result=None,
        requeue_after=WAITING_REQUEUE_SECONDS * 6,
    )


__all__ = [
    "ACTIONS",
    "Decision",
    "Event",
    "Observation",
    "RevisionState",
    "analysis_due",
    "analysis_window_seconds",
    "decide",
    "validation_due",
]
