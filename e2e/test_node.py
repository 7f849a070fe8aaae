"""What a real node does to model pods, and that ModelShip copes: kubelet's OOM kills under a memory limit,
a container killed mid-request, termination grace on scale-down, and startup probes holding a warming
model out of rotation. Load runs through the router throughout; no client may see an error."""

from __future__ import annotations

import os
import signal
import threading
import time
import urllib.request
from typing import Any

from e2e.cluster.controlplane import ControlPlane
from e2e.kube import wait_until
from e2e.modelship import BASE_SPEC, Deployed, merged
from e2e.scenarios import FAULTS, ended, healthy

TWO_REPLICAS = merged(BASE_SPEC, {"runtime": {"replicas": 2}, "traffic": {"mirrorPercent": 0}})


def _container_status(pod: Any) -> Any:
    return (pod.status.container_statuses or [None])[0]


def _ready(pod: Any) -> bool:
    return any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions or [])


def _router_retries(deployed: Deployed) -> float:
    total = 0.0
    for address in deployed.ready_addresses("router"):
        with urllib.request.urlopen(f"{address}/metrics", timeout=5) as response:
            for line in response.read().decode().splitlines():
                if line.startswith("modelship_router_upstream_retries_total"):
                    total += float(line.rsplit(" ", 1)[1])
    return total


class WeightWatch:
    """The highest canary weight the status ever showed while it runs."""

    def __init__(self, deployed: Deployed) -> None:
        self.deployed = deployed
        self.highest = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.3):
            self.highest = max(self.highest, int(self.deployed.status.get("canaryWeight") or 0))

    def __enter__(self) -> WeightWatch:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def test_a_canary_oom_killed_under_its_memory_limit_is_rolled_back(deployed: Deployed) -> None:
    spec = merged(BASE_SPEC, {"rollout": {"progressDeadlineSeconds": 45}})
    stable = healthy(deployed, spec)
    with deployed.load(rate=10) as load, WeightWatch(deployed) as weights:
        # Far below what the runtime needs to import torch and load a model: kubelet's cgroup kills it.
        deployed.patch({"runtime": {"resources": {"limits": {"cpu": "1", "memory": "48Mi"}}}})
        canary = deployed.wait(lambda s: s.get("canaryRevision"), "a canary revision", 60)["canaryRevision"]

        def oom_killed() -> Any:
            for pod in deployed.pods():
                status = _container_status(pod)
                terminated = status and status.last_state and status.last_state.terminated
                if pod.metadata.labels.get("modelship.io/revision") == canary and terminated:
                    return terminated if terminated.reason == "OOMKilled" else None
            return None

        terminated = wait_until(oom_killed, f"canary {canary} OOM-killed by the node", 120)
        entry = ended(deployed, "RolledBack", after=1, timeout=180)
    assert terminated.exit_code == 137
    assert entry["revision"] == canary
    # Seen as what it is, as soon as kubelet gives up on the pod, not at the progress deadline.
    assert "OOMKilled" in entry["reason"], entry
    assert weights.highest == 0, "a canary that never became ready got traffic"
    assert deployed.status["stableRevision"] == stable
    assert not load.report.failures, load.report.describe()
    assert set(load.report.revisions()) == {stable}


def test_a_pod_killed_mid_request_is_retried_by_the_router(deployed: Deployed, control_plane: ControlPlane) -> None:
    healthy(deployed, TWO_REPLICAS)
    wait_until(lambda: len([p for p in deployed.pods() if _ready(p)]) == 2, "two ready model pods", 60)
    victim = deployed.pods()[0]
    with deployed.load(rate=30, max_tokens=48) as load:
        time.sleep(3)
        retries_before = _router_retries(deployed)
        os.kill(control_plane.node.container_pid(_container_status(victim).container_id), signal.SIGKILL)

        def restarted() -> Any:
            pod = deployed.core.read_namespaced_pod(victim.metadata.name, deployed.namespace)
            status = _container_status(pod)
            # kubelet fills lastState a moment after the restart on some runs: wait for it too
            restarted = status.restart_count >= 1 and status.last_state.terminated is not None
            return status if restarted and _ready(pod) else None

        status = wait_until(restarted, f"kubelet to restart {victim.metadata.name} and it to be ready", 120)
        time.sleep(2)
        retries = _router_retries(deployed) - retries_before
    assert status.last_state.terminated.exit_code == 137  # SIGKILL
    assert retries >= 1, "no request was in flight on the killed pod: the scenario did not happen"
    assert not load.report.failures, load.report.describe()


def test_scale_down_lets_running_requests_finish(deployed: Deployed) -> None:
    healthy(deployed, TWO_REPLICAS)
    wait_until(lambda: len([p for p in deployed.pods() if _ready(p)]) == 2, "two ready model pods", 60)
    # Long answers: requests are running on both pods when one of them gets SIGTERM.
    with deployed.load(rate=12, max_tokens=200, ignore_eos=True) as load:
        time.sleep(3)
        deployed.patch({"runtime": {"replicas": 1}})
        wait_until(lambda: len(deployed.pods()) == 1, "the scaled-down pod to be gone", 90)
        time.sleep(2)
    assert load.report.results
    assert not load.report.failures, load.report.describe()


def test_startup_probe_holds_a_warming_model_out_of_rotation(deployed: Deployed) -> None:
    stable = healthy(deployed, merged(BASE_SPEC, {"rollout": {"progressDeadlineSeconds": 120}}))
    warmup = 20
    with deployed.load(rate=10) as load:
        started = time.monotonic()
        deployed.patch(
            {"runtime": {"env": [*FAULTS, {"name": "MODELSHIP_FAULT_WARMUP_SECONDS", "value": str(warmup)}]}}
        )
        canary = deployed.wait(lambda s: s.get("canaryRevision"), "a canary revision", 60)["canaryRevision"]

        def canary_pod() -> Any:
            pods = [p for p in deployed.pods() if p.metadata.labels.get("modelship.io/revision") == canary]
            status = _container_status(pods[0]) if pods else None
            return pods[0] if status and status.state.running else None

        pod = wait_until(canary_pod, "the canary's container to run", 90)
        assert not _ready(pod)
        entry = ended(deployed, "Promoted", after=1, timeout=240)
    events = deployed.core.list_namespaced_event(
        deployed.namespace, field_selector=f"involvedObject.name={pod.metadata.name}"
    ).items
    assert any("Startup probe failed" in (e.message or "") for e in events), [e.message for e in events]
    assert time.monotonic() - started >= warmup
    assert entry["revision"] == canary != stable
    assert not load.report.failures, load.report.describe()
