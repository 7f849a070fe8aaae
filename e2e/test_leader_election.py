"""Two operator replicas from the chart's defaults: one leads, one stands by. The leader is killed, or cut
off from the API server, at several points of a rollout while load runs through the router; the standby
carries on from status, the rollout ends as it would have, no request fails, and the API server's audit log
shows the replicas writing strictly in turn (never two writers)."""

from __future__ import annotations

import os
import signal
import time

from kubernetes import client

from e2e.cluster.controlplane import ControlPlane
from e2e.kube import Kubectl, wait_until
from e2e.leadership import (
    container_pid,
    cut_from_api,
    leader_gauges,
    leader_pod,
    lease_holder,
    operator_pods,
    operator_writes,
    wait_for_new_leader,
    writers_in_turn,
)
from e2e.modelship import BASE_SPEC, OPERATOR_NAMESPACE, Deployed, merged
from e2e.scenarios import FAULTS, ended, healthy, new_revision

# What a standby may need to take over: the lease duration after its last sight of a renewal, one retry
# period, and a restart of kopf's watches; with the chart's defaults (15 s, 2 s).
TAKEOVER_SECONDS = 15 + 2 + 10
STEPS = {"rollout": {"steps": [{"weight": 20, "pause": "25s"}, {"weight": 50, "pause": "4s"}]}}


def _turns_since(control_plane: ControlPlane, since: str) -> list[str]:
    writes = [w for w in operator_writes(control_plane.audit_events()) if w.at >= since]
    assert writes, "the audit log has no operator writes: is the audit policy in place?"
    return writers_in_turn(writes)


def _now_rfc3339() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()) + ".000000Z"


def test_one_replica_leads_and_says_so(operator: str, core: client.CoreV1Api, kubectl: Kubectl) -> None:
    pods = operator_pods(core)
    assert len(pods) == 2, [p.metadata.name for p in pods]
    assert len({p.spec.node_name for p in pods}) == 1, "one node here: the anti-affinity is a preference"
    leader = leader_pod(core)
    gauges = wait_until(lambda: len(leader_gauges(core)) == 2 and leader_gauges(core), "both replicas' /metrics", 30)
    assert gauges == {p.metadata.name: (1.0 if p.metadata.name == leader.metadata.name else 0.0) for p in pods}
    logs = kubectl("logs", "-n", OPERATOR_NAMESPACE, leader.metadata.name).stdout
    assert f"leading: {lease_holder(core.api_client)} holds the lease" in logs
    standby = next(p for p in pods if p.metadata.name != leader.metadata.name)
    assert "standing by for lease" in kubectl("logs", "-n", OPERATOR_NAMESPACE, standby.metadata.name).stdout


def test_leader_killed_mid_step_and_during_the_scale_down(
    deployed: Deployed, control_plane: ControlPlane, kubectl: Kubectl
) -> None:
    old = healthy(deployed, merged(BASE_SPEC, STEPS))
    since = _now_rfc3339()
    with deployed.load(rate=20) as load:
        time.sleep(2)
        new_revision(deployed)
        during = deployed.wait(lambda s: s.get("canaryWeight") == 20, "canary at 20%", 90)
        canary = during["canaryRevision"]
        before = deployed.deployments()
        first = lease_holder(deployed.core.api_client)
        os.kill(container_pid(control_plane.node, leader_pod(deployed.core)), signal.SIGKILL)
        second = wait_for_new_leader(deployed.core.api_client, first, TAKEOVER_SECONDS + 5)
        held = deployed.status
        assert held["canaryRevision"] == canary, "the standby carries on with the same canary"
        entry = ended(deployed, "Promoted", after=1, timeout=180)
        # The replaced stable waits out the scale-down delay; kill the new leader inside it.
        assert f"chat-{old}" in deployed.deployments()
        os.kill(container_pid(control_plane.node, leader_pod(deployed.core)), signal.SIGKILL)
        wait_for_new_leader(deployed.core.api_client, second, TAKEOVER_SECONDS + 5)
        wait_until(lambda: f"chat-{old}" not in deployed.deployments(), "old stable scaled down", 90)
        time.sleep(2)
    assert entry["revision"] == canary
    after = deployed.deployments()
    assert after[f"chat-{canary}"] == before[f"chat-{canary}"], "the canary Deployment was not created twice"
    assert after["chat-router"] == before["chat-router"]
    assert deployed.events().count("RolloutStarted") == 1
    assert [h["result"] for h in deployed.history()] == ["Deployed", "Promoted"]
    records = kubectl("get", "controllerrevisions", "-n", deployed.namespace, "-o", "name").stdout.split()
    assert len(records) == len(set(records)) == 2
    assert not load.report.failures, load.report.describe()
    turns = _turns_since(control_plane, since)
    assert len(turns) >= 3, f"three leaders wrote in turn, got {turns}"
    print(f"\n[figure] leaders in turn: {turns}")


def test_leader_cut_off_from_the_api_server_during_a_rollback(deployed: Deployed, control_plane: ControlPlane) -> None:
    stable = healthy(deployed, merged(BASE_SPEC, STEPS))
    since = _now_rfc3339()
    with deployed.load(rate=20) as load:
        time.sleep(2)
        new_revision(deployed, *FAULTS, {"name": "MODELSHIP_FAULT_LATENCY_SECONDS", "value": "0.6"})
        deployed.wait(lambda s: (s.get("canaryWeight") or 0) > 0, "the slow canary to take traffic", 90)
        first = lease_holder(deployed.core.api_client)
        leader = leader_pod(deployed.core)
        restarts = leader.status.container_statuses[0].restart_count
        with cut_from_api(control_plane.node, leader):
            cut_at = time.monotonic()
            wait_for_new_leader(deployed.core.api_client, first, TAKEOVER_SECONDS + 5)
            took_over = time.monotonic() - cut_at
            entry = ended(deployed, "RolledBack", after=1, timeout=120)
            # The cut-off leader stopped by itself (it exits when it cannot renew), before the heal.
            wait_until(
                lambda: (
                    deployed.core.read_namespaced_pod(leader.metadata.name, OPERATOR_NAMESPACE)
                    .status.container_statuses[0]
                    .restart_count
                    > restarts
                ),
                "the cut-off leader to exit",
                60,
            )
        time.sleep(3)
    assert "P99" in entry["reason"]
    assert deployed.status["stableRevision"] == stable
    assert deployed.status["canaryWeight"] == 0
    assert not load.report.failures, "latency is not an error: " + load.report.describe()
    # Healed, the old leader's restarted process stands by; nothing it had queued reached the API server.
    wait_until(lambda: len(leader_gauges(deployed.core)) == 2, "both replicas serving /metrics again", 60)
    assert sorted(leader_gauges(deployed.core).values()) == [0.0, 1.0]
    turns = _turns_since(control_plane, since)
    assert turns[0] == first
    assert len(turns) == 2, turns
    print(f"\n[figure] cut off from the API server: the standby led {took_over:.1f}s after the cut")
