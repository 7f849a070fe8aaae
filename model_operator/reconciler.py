"""One reconcile of one ModelDeployment, and the loop that runs it whenever something changes.

The loop gathers evidence (children, revision records, Prometheus when an analysis is due), asks the pure
`decide` what to do, applies the children, posts the decision's events, and writes the status once,
only when it changed. Every blocking call runs in a thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import random
import time
from datetime import UTC, datetime
from typing import Any

import kopf
from kubernetes.client.exceptions import ApiException

from . import metrics
from .analysis import Outcome, content_measured, criteria_for, drift_measured, judge, metrics_sources, unmeasured
from .analysis_batch import AnalysisBatcher, LookRequest
from .api import InvalidSpecError, ModelDeploymentSpec, ModelDeploymentStatus, parse_spec
from .children import desired_children, object_key, revision_record, spec_for
from .conditions import with_apply_failure
from .deployments import DeploymentView
from .golden import ValidationOutcome, blocked
from .golden_client import golden_set, validate
from .kube import ApplyError, Kube
from .naming import ACTION_ANNOTATION, revision_name
from .podhealth import PodChecks
from .prometheus import PrometheusSource
from .revision import revision_of
from .rollout import (
    MIN_REQUEUE_SECONDS,
    Decision,
    Event,
    Observation,
    RevisionState,
    analysis_due,
    analysis_window_seconds,
    decide,
    validation_due,
)
from .settings import OperatorSettings

log = logging.getLogger("model_operator")
# Children are applied again, unchanged, this often; sooner when their watch shows a spec someone else
# changed (see Operator.child_changed). Each re-apply and prune costs API requests per ModelDeployment,
# which at fleet size dominate the API server's load (bench/scale).
RESYNC_APPLY_SECONDS = 300.0
RECORDS_KEPT = 5
ERROR_BACKOFF_SECONDS = 5.0


def read_status(raw: Any) -> ModelDeploymentStatus:
    """The stored status; a status this version cannot read is treated as empty, not as an error."""
    try:
        return ModelDeploymentStatus.model_validate(raw or {})
    except ValueError:
        log.warning("unreadable status, starting from an empty one")
        return ModelDeploymentStatus()


def _newer(incoming: dict[str, Any], current: dict[str, Any] | None) -> bool:
    """Whether a watch event is newer than what we hold (our own writes come back later as events)."""
    if current is None:
        return True
    try:
        return int(incoming["metadata"]["resourceVersion"]) >= int(current["metadata"]["resourceVersion"])
    except (KeyError, ValueError, TypeError):
        return True


def _user_intent(body: dict[str, Any]) -> tuple[Any, ...]:
    """What users change on a ModelDeployment: its spec (the generation), its annotations (actions) and
    labels, and its deletion."""
    meta = body.get("metadata") or {}
    return (
        meta.get("uid"),
        meta.get("generation"),
        meta.get("annotations") or {},
        meta.get("labels") or {},
        meta.get("deletionTimestamp"),
    )


class ResourceLoop:
    """Reconciles one ModelDeployment until it is deleted or the operator stops."""

    def __init__(self, operator: Operator, body: dict[str, Any]) -> None:
        self.operator = operator
        self.body = body
        self.wake = asyncio.Event()
        # (apiVersion, kind, name) -> (what was applied, when, the generation the API server gave it)
        self.applied: dict[tuple[str, str, str], tuple[str, float, int]] = {}
        self.pruned_for: tuple[frozenset[tuple[str, str, str]], float] | None = None
        # Each loop resyncs on a period of its own around RESYNC_APPLY_SECONDS: a fleet created at once
        # would otherwise re-list and re-apply all at once, every time.
        self.resync_seconds = RESYNC_APPLY_SECONDS * random.uniform(0.9, 1.1)
        self.listed_at: float | None = None  # when its Deployments were last listed into the view
        # revision -> its record's data, the highest record number, and when they were listed
        self.records: tuple[dict[str, dict[str, Any]], int, float] | None = None
        self.apply_error: str | None = None
        self.pod_checks = PodChecks(operator.settings.pod_check_seconds)
        self.task = asyncio.create_task(self._run(), name=f"reconcile-{self.key}")

    @property
    def key(self) -> str:
        return f"{self.body['metadata']['namespace']}/{self.body['metadata']['name']}"

    def observe(self, body: dict[str, Any]) -> None:
        """Take a newer body; reconcile at once only when something a user sets changed. A change of status
        alone is the operator's own write coming back: waking on it would let any status that differs on
        every pass (a timestamp, an error message) turn the loop into a busy one."""
        wake = _user_intent(body) != _user_intent(self.body)
        if _newer(body, self.body):
            self.body = body
        if wake:
            self.wake.set()

    async def stop(self) -> None:
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task

    async def _run(self) -> None:
        while True:
            self.wake.clear()
            try:
                delay = await self.operator.reconcile(self)
            except asyncio.CancelledError:
                raise
            except Exception as error:
                meta = self.body["metadata"]
                metrics.RECONCILE_ERRORS.labels(meta["namespace"], meta["name"]).inc()
                log.exception("reconcile of %s failed: %s", self.key, error)
                delay = ERROR_BACKOFF_SECONDS
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), timeout=delay)


class Operator:
    """Runs one loop per ModelDeployment while it leads. A standby (`leading=False`) only remembers the
    newest body of each, so that when it takes over it starts every loop at once, without a relist."""

    def __init__(self, settings: OperatorSettings, kube: Kube, leading: bool = True) -> None:
        self.settings = settings
        self.kube = kube
        self.leading = leading
        self.standing_by: dict[str, dict[str, Any]] = {}
        self.loops: dict[str, ResourceLoop] = {}
        self._stopping: set[asyncio.Task[None]] = set()
        self._batchers: dict[str, AnalysisBatcher] = {}
        self.deployments = DeploymentView()

    # ---- events from kopf -------------------------------------------------------------------------
    def observe(self, kind: str | None, body: dict[str, Any]) -> None:
        key = f"{body['metadata']['namespace']}/{body['metadata']['name']}"
        if kind == "DELETED":
            self.deployments.forget((body["metadata"]["namespace"], body["metadata"]["name"]))
        if not self.leading:
            if kind == "DELETED":
                self.standing_by.pop(key, None)
            elif _newer(body, self.standing_by.get(key)):
                self.standing_by[key] = body
            return
        loop = self.loops.get(key)
        if kind == "DELETED":
            if loop is not None:
                self._retire(loop)
                del self.loops[key]
                metrics.forget(body["metadata"]["namespace"], body["metadata"]["name"])
            return
        if loop is None or loop.body["metadata"].get("uid") != body["metadata"].get("uid"):
            if loop is not None:
                self._retire(loop)  # deleted and created again under the same name
            self.loops[key] = ResourceLoop(self, body)
        else:
            loop.observe(body)

    def start_leading(self) -> None:
        self.leading = True
        waiting, self.standing_by = self.standing_by, {}
        for body in waiting.values():
            self.observe("ADDED", body)

    def _retire(self, loop: ResourceLoop) -> None:
        task = asyncio.create_task(loop.stop())
        self._stopping.add(task)
        task.add_done_callback(self._stopping.discard)

    def child_changed(self, namespace: str, name: str, kind: str | None, child: dict[str, Any]) -> None:
        """A watched child (a Deployment) changed: wake its loop, and when its spec is no longer the one
        this operator applied (edited by someone else, or deleted), apply it again at that reconcile."""
        self.deployments.record((namespace, name), kind, child)
        loop = self.loops.get(f"{namespace}/{name}")
        if loop is None:
            return
        meta = child.get("metadata") or {}
        key = (str(child.get("apiVersion", "apps/v1")), str(child.get("kind", "Deployment")), str(meta.get("name")))
        seen = loop.applied.get(key)
        if seen is not None and (kind == "DELETED" or int(meta.get("generation") or 0) > seen[2]):
            del loop.applied[key]
        loop.wake.set()

    async def stop(self) -> None:
        await asyncio.gather(*(loop.stop() for loop in self.loops.values()))
        self.loops.clear()

    # ---- one reconcile ----------------------------------------------------------------------------
    async def reconcile(self, loop: ResourceLoop) -> float:
        body = loop.body
        meta = body["metadata"]
        namespace, name, uid = meta["namespace"], meta["name"], meta["uid"]
        previous = read_status(body.get("status"))
        now = datetime.now(UTC)
        spec: ModelDeploymentSpec | None
        try:
            spec = parse_spec(body.get("spec"))
            desired: str | None = revision_of(spec, self.settings.server_image(spec.runtime.server))
            problems: tuple[str, ...] = ()
        except InvalidSpecError as error:
            spec, desired, problems = None, None, tuple(error.problems)
        revisions = await self._revisions(loop, namespace, name)
        analysis = None
        if spec is not None and analysis_due(previous, spec, now):
            analysis = await self._analyse(loop, namespace, name, spec, previous)
        validation = None
        if spec is not None and validation_due(previous, spec, now):
            validation = await self._validate(namespace, name, spec, previous)
            log.info("%s: validation of %s: %s", loop.key, validation.canary, validation.message)
        decision = decide(
            previous,
            Observation(
                generation=int(meta.get("generation") or 0),
                spec=spec,
                spec_problems=problems,
                desired_revision=desired,
                action=(meta.get("annotations") or {}).get(ACTION_ANNOTATION),
                revisions=revisions,
                analysis=analysis,
                now=now,
                scale_down_delay_seconds=self.settings.scale_down_delay_seconds,
                validation=validation,
            ),
        )
        status_model = decision.status
        if spec is not None and desired is not None:
            try:
                await self._apply_children(loop, body, spec, desired, decision)
                loop.apply_error = None
            except ApplyError as error:
                metrics.RECONCILE_ERRORS.labels(namespace, name).inc()
                if str(error) != loop.apply_error:  # one event per distinct failure, not one per retry
                    await asyncio.to_thread(
                        self.kube.post_event, namespace, name, uid, Event("Warning", "ApplyFailed", str(error))
                    )
                    log.warning("%s: %s", loop.key, error)
                loop.apply_error = str(error)
                status_model = status_model.model_copy(
                    update={
                        "message": str(error),
                        "conditions": with_apply_failure(
                            status_model.conditions, str(error), now, before=previous.conditions
                        ),
                    }
                )
        for event in decision.events:
            await asyncio.to_thread(self.kube.post_event, namespace, name, uid, event)
            log.info("%s: %s: %s", loop.key, event.reason, event.message)
        if decision.rollout_result:
            metrics.ROLLOUTS.labels(namespace, name, decision.rollout_result).inc()
        if decision.consume_action:
            with contextlib.suppress(ApiException):
                loop.observe(await asyncio.to_thread(self.kube.clear_action, namespace, name))
        status = status_model.to_api()
        if status != body.get("status"):
            loop.observe(await asyncio.to_thread(self.kube.write_status, namespace, name, status))
        metrics.record_state(namespace, name, decision.status.phase.value, decision.weight)
        if loop.apply_error:
            return ERROR_BACKOFF_SECONDS
        # The decision's requeue counts from its `now`: time spent since (an analysis waiting for its batch,
        # slow API calls) is not added again, so looks stay an interval apart instead of drifting later.
        spent = (datetime.now(UTC) - now).total_seconds()
        return max(MIN_REQUEUE_SECONDS, min(decision.requeue_after, self.settings.resync_seconds) - spent)

    async def _revisions(self, loop: ResourceLoop, namespace: str, name: str) -> dict[str, RevisionState]:
        """From the Deployment watch's view; listed once per loop before the view is trusted, and every
        resync. Pods are listed only for a revision short of ready pods, as PodChecks paces it."""
        owner = (namespace, name)
        if loop.listed_at is None or time.monotonic() - loop.listed_at >= loop.resync_seconds:
            since = self.deployments.mark()
            listed = await asyncio.to_thread(self.kube.model_deployments, namespace, name)
            self.deployments.merge(owner, listed, since)
            loop.listed_at = time.monotonic()
        pods = self.deployments.revisions(owner)
        now = time.monotonic()
        due = loop.pod_checks.due({revision for revision, p in pods.items() if p.short_of_ready}, now)
        found = await asyncio.gather(
            *(asyncio.to_thread(self.kube.pod_failures, namespace, name, revision) for revision in due)
        )
        for revision, failures in zip(due, found, strict=True):
            loop.pod_checks.listed(revision, failures, now)
        return {
            revision: RevisionState(replicas=p.replicas, ready=p.ready, failures=loop.pod_checks.failures(revision))
            for revision, p in pods.items()
        }

    async def _records(self, loop: ResourceLoop, namespace: str, name: str) -> tuple[dict[str, dict[str, Any]], int]:
        """Revision records change only by this operator's hand (created here, pruned here), so they are
        listed once per loop and every resync, and kept up to date as they are written."""
        if loop.records is None or time.monotonic() - loop.records[2] >= loop.resync_seconds:
            records, highest = await asyncio.to_thread(self.kube.revision_records, namespace, name)
            loop.records = (records, highest, time.monotonic())
        records, highest, _ = loop.records
        return dict(records), highest

    async def _analyse(
        self, loop: ResourceLoop, namespace: str, name: str, spec: ModelDeploymentSpec, status: ModelDeploymentStatus
    ) -> Outcome:
        assert status.stable_revision is not None
        assert status.canary_revision is not None
        records, _ = await self._records(loop, namespace, name)

        runtimes = (
            spec_for(spec, records.get(status.stable_revision)).runtime,
            spec_for(spec, records.get(status.canary_revision)).runtime,
        )
        servers = (runtimes[0].server, runtimes[1].server)
        url = spec.rollout.analysis.prometheus_url or self.settings.prometheus_url
        batcher = self._batchers.get(url) or self._batchers.setdefault(
            url,
            AnalysisBatcher(
                PrometheusSource(url, self.settings.prometheus_timeout_seconds).measure_many,
                self.settings.analysis_batch_seconds,
            ),
        )
        started = time.monotonic()
        measurement = await batcher.measure(
            LookRequest(
                namespace,
                name,
                status.stable_revision,
                status.canary_revision,
                functools.partial(analysis_window_seconds, status, spec),
                drift_measured(spec),
                content_measured(spec, servers),
                metrics_sources(spec, runtimes),
            )
        )
        outcome = judge(measurement, criteria_for(spec), status.carried_evidence, unmeasured(spec, servers))
        metrics.ANALYSIS_DURATION.labels(namespace, name).observe(time.monotonic() - started)
        return outcome

    async def _validate(
        self, namespace: str, name: str, spec: ModelDeploymentSpec, status: ModelDeploymentStatus
    ) -> ValidationOutcome:
        rules = spec.rollout.validation
        stable, canary = status.stable_revision, status.canary_revision
        assert rules is not None
        assert stable is not None
        assert canary is not None
        try:
            prompts = await asyncio.to_thread(
                golden_set, rules, functools.partial(self.kube.config_map_value, namespace)
            )
            urls = await asyncio.gather(
                *(asyncio.to_thread(self.kube.service_url, namespace, revision_name(name, r)) for r in (stable, canary))
            )
        except (LookupError, ValueError) as error:
            return blocked(canary, stable, f"the golden set cannot be read: {error}")
        except ApiException as error:
            return blocked(canary, stable, f"the API server refused a read: {error.status} {error.reason}")
        for revision, url in zip((stable, canary), urls, strict=True):
            if url is None:
                return blocked(canary, stable, f"revision {revision} has no Service address yet")
        assert urls[0] is not None
        assert urls[1] is not None
        started = time.monotonic()
        outcome = await validate(rules, prompts, (stable, urls[0]), (canary, urls[1]))
        metrics.VALIDATION_DURATION.labels(namespace, name, outcome.verdict.value).observe(time.monotonic() - started)
        return outcome

    async def _apply_children(
        self, loop: ResourceLoop, body: dict[str, Any], spec: ModelDeploymentSpec, desired: str, decision: Decision
    ) -> None:
        meta = body["metadata"]
        namespace, name = meta["namespace"], meta["name"]
        records, highest = await self._records(loop, namespace, name)
        new_record = None
        if desired not in records:
            new_record = revision_record(name, spec, desired, highest + 1, self.settings)
            records[desired] = new_record["data"]
        children = desired_children(name, namespace, spec, desired, records, decision, self.settings)
        missing = children.missing
        for revision in missing:
            log.warning(
                "%s: revision %s has no ControllerRevision record; its pods are left as they are", loop.key, revision
            )
        backends = ([new_record] if new_record is not None else []) + children.backends
        objects = backends + children.routing
        kopf.append_owner_reference(objects, owner=body)  # type: ignore[arg-type]
        now = time.monotonic()
        await self._apply_stage(loop, namespace, backends, now)
        if new_record is not None and loop.records is not None:
            loop.records = (records, highest + 1, loop.records[2])
        await self._apply_stage(loop, namespace, children.routing, now)
        keep = {object_key(o) for o in objects}
        history = [h.revision for h in decision.status.history][-RECORDS_KEPT:]
        kept_records = {
            f"{name}-{r}" for r in {*decision.plan, desired, decision.status.aborted_revision, *history} if r
        }
        await self._prune(loop, namespace, name, meta["uid"], keep, kept_records, missing)

    async def _apply_stage(self, loop: ResourceLoop, namespace: str, stage: list[dict[str, Any]], now: float) -> None:
        """Apply, all at once, the objects of a stage that changed or are due for their resync. When one fails,
        the others still land (and are remembered), and the first failure is raised: the next stage must not
        be applied on top of a missing object."""
        pending = []
        for obj in stage:
            text, seen = repr(obj), loop.applied.get(object_key(obj))
            if seen is None or seen[0] != text or now - seen[1] >= loop.resync_seconds:
                pending.append((obj, text))
        try:
            results = await asyncio.gather(
                *(asyncio.to_thread(self.kube.apply, obj, namespace) for obj, _ in pending), return_exceptions=True
            )
        except BaseException:
            loop.records = None  # cancelled mid-way: what was written is not known, list the records again
            raise
        failures = [result for result in results if isinstance(result, BaseException)]
        for (obj, text), result in zip(pending, results, strict=True):
            if not isinstance(result, BaseException):
                loop.applied[object_key(obj)] = (text, now, result)
        if failures:
            loop.records = None
            raise failures[0]

    async def _prune(
        self,
        loop: ResourceLoop,
        namespace: str,
        name: str,
        uid: str,
        keep: set[tuple[str, str, str]],
        kept_records: set[str],
        missing: list[str],
    ) -> None:
        """Delete what this ModelDeployment owns and no longer wants: only when the wanted set lost something
        since the last prune (what it owns it applied since, all of it wanted then), or every resync. A
        rollout's start only adds children, and costs no listing of the eight kinds."""
        wanted = frozenset(key for key in keep if key[1] != "ControllerRevision")  # records: kept_records
        last = loop.pruned_for
        if last is not None and wanted >= last[0] and time.monotonic() - last[1] < loop.resync_seconds:
            loop.pruned_for = (wanted, last[1])
            return
        owned = await asyncio.to_thread(self.kube.owned, namespace, name, uid)
        spared = {f"{name}-{r}" for r in missing}
        for api_version, kind, object_name in owned:
            if (api_version, kind, object_name) in keep or object_name in spared:
                continue
            if kind == "ControllerRevision" and object_name in kept_records:
                continue
            log.info("%s: deleting %s %s", loop.key, kind, object_name)
            if kind == "ControllerRevision":
                loop.records = None
            await asyncio.to_thread(self.kube.delete, namespace, api_version, kind, object_name)
            loop.applied.pop((api_version, kind, object_name), None)
        loop.pruned_for = (wanted, time.monotonic())
