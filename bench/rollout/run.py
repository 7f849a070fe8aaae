"""Rollout decisions on a real control plane: how fast a bad canary is rolled back once it takes
traffic, and how often a good canary is rolled back by mistake.

    python -m bench.rollout.run [--good 30] [--bad 3]

It brings up its own local control plane, installs the chart, serves the tiny GPT-2 behind the router
with steady load (25 req/s), and rolls out revision after revision with the e2e suite's fast settings
(analysis every 2 s, minRequests 30, steps 20% and 50% of 4 s each): good canaries in two configurations,
the e2e spec and one whose P99 cap (5 ms) stable itself is above, then bad canaries. A bad canary that is
promoted is listed and fails the run, as does any good one rolled back. Thirty good canaries bound the
false-rollback rate only loosely (0 of 30 is compatible with up to 11.6%); bench/judgment measures it.
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
from e2e.scenarios import FAULTS, new_revision, time_to_rollback

CONFIGURATIONS: dict[str, dict[str, object]] = {
    "the e2e spec": {"rollout": {"analysis": {"thresholds": {"p99LatencySeconds": 0.5}}}},
    # The tiny model answers in tens of milliseconds: stable itself is above a 5 ms cap all along.
    "stable above the P99 cap": {"rollout": {"analysis": {"thresholds": {"p99LatencySeconds": 0.005}}}},
}


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
    parser.add_argument("--good", type=int, default=30, help="good canaries to roll out, per configuration")
    parser.add_argument("--bad", type=int, default=3, help="canaries of each bad kind")
    args = parser.parse_args()
    plane = ControlPlane(f"bench-rollout-{os.getpid()}", backoff_seconds=2.0)
    info = plane.up()
    plane.enter()
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
        for configuration, change in CONFIGURATIONS.items():
            deployed.patch(change)
            for number in range(args.good):
                entry, load = rollout(deployed)
                failures = len(load.report.failures)  # type: ignore[attr-defined]
                good.append((configuration, entry["result"], failures))
                print(
                    f"good canary {number + 1} ({configuration}): {entry['result']} ({entry['reason']}); "
                    f"failed requests: {failures}",
                    flush=True,
                )
        deployed.patch(CONFIGURATIONS["the e2e spec"])
        bad: dict[str, list[tuple[float, float]]] = {"50% errors": [], "0.6s latency": []}
        faults = {
            "50% errors": {"name": "MODELSHIP_FAULT_ERROR_RATE", "value": "0.5"},
            "0.6s latency": {"name": "MODELSHIP_FAULT_LATENCY_SECONDS", "value": "0.6"},
        }
        missed: list[str] = []
        for kind, fault in faults.items():
            for number in range(args.bad):
                entry, load = rollout(deployed, *FAULTS, fault)
                if entry["result"] != "RolledBack":
                    missed.append(f"{kind} #{number + 1}: {entry['result']} ({entry['reason']})")
                    print(f"bad canary ({kind}) {number + 1}: NOT rolled back: {entry}", flush=True)
                    rollout(deployed)
                    continue
                timing = time_to_rollback(deployed, load, str(entry["revision"]), entry)
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
    rolled_back = sum(1 for _, result, _ in good if result != "Promoted")
    print()
    print("| measurement | result |")
    print("|---|---|")
    for configuration in CONFIGURATIONS:
        mine = [result for name, result, _ in good if name == configuration]
        back = sum(1 for result in mine if result != "Promoted")
        print(f"| good canaries rolled back ({configuration}) | {back} of {len(mine)} |")
    print(f"| failed requests during good rollouts | {sum(f for _, _, f in good)} |")
    print(f"| bad canaries not rolled back | {len(missed)} |")
    for line in missed:
        print(f"|   {line} | |")
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
    return 0 if rolled_back == 0 and not missed else 1


if __name__ == "__main__":
    sys.exit(main())
