"""Rollout decisions on a real control plane: how fast a bad canary is rolled back once it takes
traffic, and how often a good canary is rolled back by mistake (target: never).

    python -m bench.rollout.run [--good 10] [--bad 3]

It brings up its own local control plane, installs the chart, serves the tiny GPT-2 behind the router
with steady load (25 req/s), and rolls out revision after revision with the e2e suite's fast settings
(analysis every 2 s, minRequests 30, steps 20% and 50% of 4 s each).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from kubernetes import client, config

from e2e.cluster.controlplane import ControlPlane
from e2e.kube import Kubectl
from e2e.modelship import BASE_SPEC, Deployed, install_operator, model_volume
from e2e.test_rollouts import FAULTS, _time_to_rollback, new_revision


def rollout(deployed: Deployed, *env: dict[str, str]) -> tuple[dict[str, object], object]:
    before = deployed.last_entry()
    with deployed.load(rate=25) as load:
        time.sleep(2)
        new_revision(deployed, *env)
        entry = deployed.wait_rollout_end(before, "the rollout to end", 300)
        time.sleep(1)
    return entry, load


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--good", type=int, default=10, help="good canaries to roll out")
    parser.add_argument("--bad", type=int, default=3, help="canaries of each bad kind")
    args = parser.parse_args()
    plane = ControlPlane(f"bench-rollout-{os.getpid()}", backoff_seconds=2.0)
    info = plane.up()
    try:
        kubectl = Kubectl(info.kubeconfig)
        install_operator(info, kubectl)
        kubectl("create", "namespace", "bench")
        from model_runtime.tinymodel import build

        models = Path(tempfile.mkdtemp(prefix="bench-models-"))
        build(models / "tiny")
        for path in [models, *models.rglob("*")]:
            path.chmod(0o755 if path.is_dir() else 0o644)
        model_volume(kubectl, "bench", models)
        api = config.new_client_from_config(config_file=info.kubeconfig)
        deployed = Deployed(kubectl, client.CoreV1Api(api), client.CustomObjectsApi(api), "bench", "chat")
        deployed.apply(BASE_SPEC)
        deployed.wait_phase("Healthy", 180)
        good = []
        for number in range(args.good):
            entry, load = rollout(deployed)
            failures = len(load.report.failures)  # type: ignore[attr-defined]
            good.append((entry["result"], failures))
            print(
                f"good canary {number + 1}: {entry['result']} ({entry['reason']}); failed requests: {failures}",
                flush=True,
            )
        bad: dict[str, list[tuple[float, float]]] = {"50% errors": [], "0.6s latency": []}
        faults = {
            "50% errors": {"name": "MODELSHIP_FAULT_ERROR_RATE", "value": "0.5"},
            "0.6s latency": {"name": "MODELSHIP_FAULT_LATENCY_SECONDS", "value": "0.6"},
        }
        for kind, fault in faults.items():
            for number in range(args.bad):
                entry, load = rollout(deployed, *FAULTS, fault)
                if entry["result"] != "RolledBack":
                    print(f"bad canary ({kind}) {number + 1}: NOT rolled back: {entry}", flush=True)
                    continue
                timing = _time_to_rollback(deployed, load, str(entry["revision"]), entry)
                bad[kind].append(timing)
                print(
                    f"bad canary ({kind}) {number + 1}: rolled back {timing[0]:.1f}s after its first request, "
                    f"{timing[1]:.1f}s after reaching minRequests: {entry['reason']}",
                    flush=True,
                )
                # The spec goes back to a good revision before the next bad one.
                rollout(deployed)
    finally:
        plane.down()
    rolled_back = sum(1 for result, _ in good if result != "Promoted")
    print()
    print("| measurement | result |")
    print("|---|---|")
    print(f"| good canaries rolled back | {rolled_back} of {len(good)} |")
    print(f"| failed requests during good rollouts | {sum(f for _, f in good)} |")
    for kind, figures in bad.items():
        if figures:
            first = statistics.median(f[0] for f in figures)
            after_min = max(f[1] for f in figures)
            print(
                f"| {kind}: rolled back after the canary's first request (median of {len(figures)}) | {first:.1f} s |"
            )
            print(
                f"| {kind}: rolled back after it reached minRequests (worst) | {after_min:.1f} s "
                f"(interval 2 s; target <= 6 s) |"
            )
    return 0 if rolled_back == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
