"""The rollout engine on a real control plane: the operator runs from the chart, the model pods run the
real runtime with the tiny GPT-2, Prometheus scrapes them, and a load generator runs throughout."""

from __future__ import annotations

import os
import signal
import time

from kubernetes import client

from e2e.cluster.controlplane import ControlPlane
from e2e.kube import wait_until
from e2e.modelship import BASE_SPEC, OPERATOR_NAMESPACE, Deployed, merged
from e2e.scenarios import FAULTS, ended, healthy, new_revision, process_uid, promoted_to_stable, time_to_rollback


def test_a_first_deploy_becomes_healthy(deployed: Deployed, control_plane: ControlPlane) -> None:
    stable = healthy(deployed)
    status = deployed.status
    assert deployed.condition("Ready")["status"] == "True"
    assert deployed.condition("Reconciling")["status"] == "False"
    assert deployed.condition("Stalled")["status"] == "False"
    assert status["history"][0]["result"] == "Deployed"
    names = set(deployed.deployments())
    assert names == {f"chat-{stable}", "chat-router"}
    model_pod = deployed.pods()[0]
    security = model_pod.spec.containers[0].security_context
    assert security.read_only_root_filesystem is True
    assert security.run_as_user == 1000
    # And the processes really are non-root: the model server, the router and the chart's operator.
    operators = deployed.core.list_namespaced_pod(OPERATOR_NAMESPACE, label_selector="app.kubernetes.io/name=modelship")
    assert operators.items
    assert deployed.pods("router")
    for pod in [model_pod, *deployed.pods("router"), *operators.items]:
        assert process_uid(control_plane.node, pod) == 1000, pod.metadata.name
    with deployed.load(rate=10) as load:
        time.sleep(3)
    assert load.report.results
    assert not load.report.failures, load.report.describe()
    assert set(load.report.revisions()) == {stable}


def test_b_good_revision_is_promoted_with_no_failed_request(deployed: Deployed) -> None:
    old = healthy(deployed)
    with deployed.load(rate=25) as load:
        time.sleep(2)
        new_revision(deployed)
        new = promoted_to_stable(deployed, after=1)["revision"]
        # The replaced stable goes after the scale-down delay, while load continues.
        wait_until(lambda: f"chat-{old}" not in deployed.deployments(), "old stable scaled down", 60)
        time.sleep(2)
    assert not load.report.failures, load.report.describe()
    served = load.report.revisions()
    assert served[old] > 0
    assert served[new] > 0
    reasons = deployed.events()
    for reason in ("RolloutStarted", "StepStarted", "Promoted"):
        assert reason in reasons
    assert deployed.condition("UpToDate")["status"] == "True"


def test_c_injected_latency_is_rolled_back(deployed: Deployed) -> None:
    healthy(deployed)
    with deployed.load(rate=25) as load:
        time.sleep(2)
        new_revision(deployed, *FAULTS, {"name": "MODELSHIP_FAULT_LATENCY_SECONDS", "value": "0.6"})
        entry = ended(deployed, "RolledBack", after=1)
        time.sleep(3)
    assert "P99" in entry["reason"]
    assert not load.report.failures, "latency is not an error: " + load.report.describe()
    since_first, since_min = time_to_rollback(deployed, load, entry["revision"], entry)
    interval = 2.0
    print(
        f"\n[figure] injected latency: rolled back {since_first:.1f}s after the canary's first request, "
        f"{since_min:.1f}s after it reached minRequests (interval {interval:g}s)"
    )
    assert since_min <= 3 * interval + 2  # 3 intervals, plus one scrape and one reconcile of slack
    assert deployed.status["canaryWeight"] == 0
    assert deployed.condition("RolledBack")["status"] == "True"


def test_d_injected_errors_are_rolled_back(deployed: Deployed) -> None:
    stable = healthy(deployed)
    with deployed.load(rate=25) as load:
        time.sleep(2)
        new_revision(deployed, *FAULTS, {"name": "MODELSHIP_FAULT_ERROR_RATE", "value": "0.5"})
        entry = ended(deployed, "RolledBack", after=1)
        rolled_back_at = time.time()
        time.sleep(4)
    assert "error rate" in entry["reason"]
    since_first, since_min = time_to_rollback(deployed, load, entry["revision"], entry)
    print(
        f"\n[figure] injected errors: rolled back {since_first:.1f}s after the canary's first request, "
        f"{since_min:.1f}s after it reached minRequests"
    )
    assert since_min <= 3 * 2.0 + 2
    late = [r for r in load.report.results if r.at > rolled_back_at + 1.5]
    assert late
    assert all(r.status == 200 and r.revision == stable for r in late), "after the rollback stable serves everything"
    assert deployed.status["phase"] == "Degraded"


def test_d_empty_answers_are_rolled_back_on_the_content_sli(deployed: Deployed) -> None:
    """Fast, error-free and wrong: every answer a 200 with nothing in it. Latency and errors see nothing;
    the content SLI does."""
    stable = healthy(deployed)
    with deployed.load(rate=25) as load:
        time.sleep(2)
        new_revision(deployed, *FAULTS, {"name": "MODELSHIP_FAULT_EMPTY_RATE", "value": "1"})
        entry = ended(deployed, "RolledBack", after=1)
        time.sleep(3)
    assert "empty answers" in entry["reason"], entry["reason"]
    assert not load.report.failures, "an empty answer is no error: " + load.report.describe()
    canary = entry["revision"]
    served_by_canary = [r for r in load.report.results if r.revision == canary]
    assert served_by_canary, "the canary served some of the load before it was rolled back"
    content = next(m for m in entry["analysis"] if m["name"] == "contentIssues")
    assert content["verdict"] == "Fail"
    assert content["canary"] == 1.0  # every canary answer was empty
    assert "modelship_choices_total" in content["query"]
    since_first, since_min = time_to_rollback(deployed, load, canary, entry)
    print(
        f"\n[figure] empty answers: rolled back {since_first:.1f}s after the canary's first request, "
        f"{since_min:.1f}s after it reached minRequests"
    )
    assert deployed.status["canaryWeight"] == 0
    assert deployed.status["stableRevision"] == stable


def test_e_prometheus_stopped_pauses_and_resumes(deployed: Deployed, control_plane: ControlPlane) -> None:
    spec = merged(BASE_SPEC, {"rollout": {"steps": [{"weight": 20, "pause": "10s"}, {"weight": 50, "pause": "4s"}]}})
    healthy(deployed, spec)
    prometheus = int((control_plane.pids / "prometheus.pid").read_text())
    with deployed.load(rate=20) as load:
        time.sleep(2)
        new_revision(deployed)
        deployed.wait(lambda s: s.get("canaryWeight") == 20, "canary at 20%", 90)
        os.kill(prometheus, signal.SIGSTOP)
        try:
            paused = deployed.wait(
                lambda s: s.get("phase") == "Paused" and s.get("blindSince"), "paused while blind", 60
            )
            assert paused["canaryWeight"] == 20
            time.sleep(8)
            held = deployed.status
            assert held["phase"] == "Paused"
            assert held["canaryWeight"] == 20, "blindness holds the weight"
            assert held.get("canaryRevision"), "blindness does not roll back"
        finally:
            os.kill(prometheus, signal.SIGCONT)
        entry = ended(deployed, "Promoted", after=1)
    assert entry["result"] == "Promoted"
    reasons = deployed.events()
    assert "AnalysisBlind" in reasons
    assert "AnalysisRecovered" in reasons
    assert not load.report.failures, load.report.describe()


def test_g_canary_never_ready_is_rolled_back_at_the_deadline(deployed: Deployed) -> None:
    stable = healthy(deployed, merged(BASE_SPEC, {"rollout": {"progressDeadlineSeconds": 15}}))
    stable_uid = deployed.deployments()[f"chat-{stable}"]
    started = time.time()
    new_revision(deployed, *FAULTS, {"name": "MODELSHIP_FAULT_NEVER_READY", "value": "true"})
    entry = ended(deployed, "RolledBack", after=1, timeout=90)
    assert "progressDeadlineSeconds" in entry["reason"]
    assert time.time() - started < 60
    assert deployed.deployments()[f"chat-{stable}"] == stable_uid
    assert deployed.status["stableRevision"] == stable


def test_h_spec_change_mid_rollout_restarts_at_step_zero(deployed: Deployed) -> None:
    spec = merged(BASE_SPEC, {"rollout": {"steps": [{"weight": 20, "pause": "20s"}, {"weight": 50, "pause": "4s"}]}})
    stable = healthy(deployed, spec)
    stable_uid = deployed.deployments()[f"chat-{stable}"]
    stable_pods = {p.metadata.name for p in deployed.pods() if p.metadata.labels["modelship.io/revision"] == stable}
    with deployed.load(rate=20) as load:
        time.sleep(2)
        new_revision(deployed)
        first = deployed.wait(lambda s: s.get("canaryWeight") == 20, "first canary at 20%", 90)["canaryRevision"]
        new_revision(deployed)
        second = deployed.wait(lambda s: s.get("canaryRevision") not in (None, first), "second canary")
        assert second["canaryWeight"] == 0 or second["currentStep"] in (None, 0)
        assert second["stableRevision"] == stable
        still = {p.metadata.name for p in deployed.pods() if p.metadata.labels["modelship.io/revision"] == stable}
        assert still == stable_pods, "stable's pods were not touched"
        assert deployed.deployments()[f"chat-{stable}"] == stable_uid
        entry = ended(deployed, "Promoted", after=2, timeout=240)
    assert entry["revision"] == second["canaryRevision"]
    history = [h["result"] for h in deployed.history()]
    assert history == ["Deployed", "Superseded", "Promoted"]
    assert not load.report.failures, load.report.describe()


def test_i_invalid_spec_is_reported_and_other_resources_go_on(deployed: Deployed) -> None:
    stable = healthy(deployed)
    deployed.patch({"runtime": {"env": [{"name": "MODELSHIP_MODEL_PATH", "value": "/elsewhere"}]}})
    status = deployed.wait(
        lambda s: any(c["type"] == "InvalidSpec" and c["status"] == "True" for c in s.get("conditions", [])),
        "InvalidSpec",
        60,
    )
    assert "set by the operator" in deployed.condition("InvalidSpec")["message"]
    assert deployed.condition("Stalled")["status"] == "True"
    assert status["stableRevision"] == stable
    assert "InvalidSpec" in deployed.events()
    other = Deployed(deployed.kubectl, deployed.core, deployed.custom, deployed.namespace, "other")
    other.apply(BASE_SPEC)
    other.wait_phase("Healthy", timeout=120)
    with deployed.load(rate=10) as load:  # the invalid one still serves with what it had
        time.sleep(3)
    assert load.report.results
    assert not load.report.failures


def test_j_a_child_edited_by_hand_is_restored_at_once(deployed: Deployed) -> None:
    """Children are re-applied unchanged only every few minutes; a spec someone else writes is seen on the
    Deployment watch and taken back at the next reconcile."""
    stable = healthy(deployed)
    child = f"chat-{stable}"

    def spec() -> tuple[int, int]:
        body = client.AppsV1Api(deployed.core.api_client).read_namespaced_deployment(child, deployed.namespace)
        return int(body.metadata.generation or 0), int(body.spec.replicas or 0)

    before, _ = spec()
    deployed.kubectl("scale", "deployment", child, "-n", deployed.namespace, "--replicas=2")
    started = time.monotonic()
    # The scale and the operator's answer each bump the generation: both happened, in that order.
    wait_until(lambda: spec()[0] >= before + 2 and spec()[1] == 1, "the operator to restore the replicas", 20)
    print(f"\n[figure] a hand-edited child restored {time.monotonic() - started:.1f}s after the edit")
