"""The ModelDeployment status: what the operator observed and decided, for humans and GitOps tools.

Conditions follow kstatus (Ready, Reconciling, Stalled) so Flux and Argo CD read health without help.
Status models ignore fields they do not know, so an operator upgrade or downgrade never fails to read them.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Literal

from pydantic import ConfigDict, Field

from .base import ApiModel


class Phase(StrEnum):
    PENDING = "Pending"
    PROGRESSING = "Progressing"
    VALIDATING = "Validating"
    PAUSED = "Paused"
    HEALTHY = "Healthy"
    DEGRADED = "Degraded"
    FAILED = "Failed"


class Verdict(StrEnum):
    PASS = "Pass"
    FAIL = "Fail"
    INCONCLUSIVE = "Inconclusive"
    NO_DATA = "NoData"
    ERROR = "Error"
    NOT_MEASURED = "NotMeasured"  # an SLI the revision's server cannot give: reported, never passed


class HistoryResult(StrEnum):
    DEPLOYED = "Deployed"
    PROMOTED = "Promoted"
    ROLLED_BACK = "RolledBack"
    ABORTED = "Aborted"
    SUPERSEDED = "Superseded"


class StatusModel(ApiModel):
    # Status is written by the operator itself (timestamps arrive as strings): read it leniently.
    model_config = ConfigDict(extra="ignore", strict=False)


class MetricResult(StatusModel):
    """One SLI of the last analysis."""

    name: str
    """The SLI: `requests`, `errorRate`, `p99LatencySeconds`, `drift` or `contentIssues`."""

    canary: float | None = None
    """The canary's value over the window."""

    stable: float | None = None
    """Stable's value over the same window."""

    canary_samples: int = 0
    """Requests (or mirrored comparisons, for drift) behind the canary's value."""

    stable_samples: int = 0
    """Requests behind stable's value."""

    verdict: Verdict
    """Pass, Fail, Inconclusive (not enough evidence yet), NoData, Error, or NotMeasured (the revision's
    server cannot give this SLI; it is reported and neither passes nor fails the canary)."""

    reason: str = ""
    """Why, in words."""

    threshold: float | None = None
    """The limit judged against: the absolute cap, the allowed P99 (when the ratio failed), the drift mean,
    or minRequests."""

    statistic: str = ""
    """The test's counts: the canary's and stable's events and the canary's share of requests."""

    e_value: float | None = None
    """The evidence against "the canary is no worse" (an e-value; valid however often it is looked at). The
    SLI fails when it reaches 1/alpha."""

    p_value: float | None = None
    """The always-valid p-value, min(1, 1/eValue)."""

    alpha: float | None = None
    """What this SLI's test may spend in this step: (1 - confidence) / (steps x SLIs)."""

    query: str = ""
    """The PromQL that measured it."""


class AnalysisRecord(StatusModel):
    """The last analysis of the canary."""

    time: datetime
    """When it ran."""

    step: int
    """The step it judged (0-based)."""

    verdict: Verdict
    """The overall verdict."""

    message: str = ""
    """A one-line summary."""

    metrics: list[MetricResult] = Field(default_factory=list)
    """Per-SLI results."""

    evidence: dict[str, float] = Field(default_factory=dict)
    """Each test's e-value over the rollout so far (earlier steps' carried in): what the next step starts
    from when this one passes."""


class Fingerprints(StatusModel):
    """What a revision's runtime reports it tokenizes and runs with (model_runtime.fingerprint)."""

    tokenizer: str | None = None
    """Digest of what decides tokenization: vocabulary, merges, normalizer, pre-tokenizer, special tokens,
    chat template. The same digest, the same token ids for every text."""

    config: str | None = None
    """Digest of the model's config."""


class GoldenEvidence(StatusModel):
    """How the two revisions answered one golden prompt."""

    name: str
    """The prompt's name."""

    divergence: float | None = None
    """Mean Jensen-Shannon divergence of the next-token distributions, over the positions where the greedy
    answers still agree; none when a revision gave no logprobs."""

    exact_match: bool
    """Whether the greedy answers are the same text."""

    canary_correct: bool | None = None
    """Whether the canary's answer meets the prompt's expectation (none without one)."""

    stable_correct: bool | None = None
    """Whether stable's answer meets it."""

    canary_answer: str = ""
    """The canary's answer, truncated."""

    stable_answer: str = ""
    """Stable's answer, truncated."""


class ValidationRecord(StatusModel):
    """The last golden-prompt validation: one canary against one stable, before any traffic."""

    revision: str
    """The canary validated."""

    against: str
    """The stable it was compared with."""

    time: datetime
    """When it finished."""

    verdict: Verdict
    """Pass, Fail, or Error (it could not run: stable unreachable, the golden ConfigMap missing)."""

    message: str = ""
    """A one-line summary."""

    metrics: list[MetricResult] = Field(default_factory=list)
    """Per-check results: tokenizer, divergence, exactMatch, correctness, latencySeconds."""

    worst_prompts: list[GoldenEvidence] = Field(default_factory=list)
    """The prompts where the revisions differed most."""


class HistoryEntry(StatusModel):
    """How one revision's rollout ended."""

    revision: str
    """The revision hash."""

    result: HistoryResult
    """Deployed (first), Promoted, RolledBack, Aborted (by a user) or Superseded (by a newer spec)."""

    started_at: datetime | None = None
    """When its rollout started."""

    finished_at: datetime
    """When it ended."""

    reason: str = ""
    """Why it ended so."""

    analysis: list[MetricResult] = Field(default_factory=list)
    """For a rollback decided by the analysis: the per-SLI evidence it was decided on."""


class RetiringRevision(StatusModel):
    """A replaced stable revision, kept running briefly after promotion so in-flight requests finish."""

    revision: str
    """The revision hash."""

    until: datetime
    """When its pods are removed."""


class Condition(StatusModel):
    """A kstatus-style condition."""

    type: str
    """Ready, Reconciling, Stalled, UpToDate, Progressing, AnalysisPassing, RolledBack or InvalidSpec."""

    status: Literal["True", "False", "Unknown"]
    """Whether the condition holds."""

    reason: str
    """A CamelCase reason from a fixed set."""

    message: str = ""
    """Details for humans."""

    last_transition_time: datetime
    """When the status last changed."""

    observed_generation: int | None = None
    """The spec generation the condition was computed from."""


class ModelDeploymentStatus(StatusModel):
    """What the operator last observed and decided."""

    observed_generation: int | None = None
    """The spec generation this status describes."""

    phase: Phase = Phase.PENDING
    """Pending, Progressing, Validating (a canary answers the golden set at weight 0), Paused, Healthy,
    Degraded (a canary was rolled back) or Failed."""

    message: str = ""
    """What is happening now, in words."""

    desired_revision: str | None = None
    """The revision of the current spec."""

    stable_revision: str | None = None
    """The revision serving most traffic."""

    canary_revision: str | None = None
    """The revision being canaried, if any."""

    aborted_revision: str | None = None
    """The last revision rolled back; not retried until the spec changes or a user asks."""

    canary_weight: int = 0
    """Percent of traffic the canary receives."""

    current_step: int | None = None
    """The canary step in progress (0-based)."""

    step_started_at: datetime | None = None
    """When the current step started."""

    rollout_started_at: datetime | None = None
    """When the canary of the current rollout was created; the progress deadline counts from here."""

    blind_since: datetime | None = None
    """Since when the analysis has had no data or only query errors."""

    aborted_at: datetime | None = None
    """When the last rollback happened; the rolled-back canary is scaled down a delay after it."""

    user_paused: bool = False
    """Paused by the `pause` action until `resume`."""

    retiring: list[RetiringRevision] = Field(default_factory=list)
    """Replaced stable revisions still running until their scale-down time."""

    stable_ready_replicas: int = 0
    """Ready pods of the stable revision."""

    canary_ready_replicas: int = 0
    """Ready pods of the canary revision."""

    last_analysis: AnalysisRecord | None = None
    """The last analysis of the canary."""

    validation: ValidationRecord | None = None
    """The last golden-prompt validation (rollout.validation)."""

    fingerprints: dict[str, Fingerprints] = Field(default_factory=dict)
    """Each running revision's tokenizer and config digests, as its runtime reported them to validation."""

    carried_evidence: dict[str, float] = Field(default_factory=dict)
    """Each test's e-value at the end of the canary's earlier steps: evidence is multiplied across steps,
    so a rollout spends 1 - confidence once, not once per step."""

    history: list[HistoryEntry] = Field(default_factory=list)
    """The last revisions and how each ended, newest last."""

    conditions: list[Condition] = Field(default_factory=list)
    """kstatus conditions."""
