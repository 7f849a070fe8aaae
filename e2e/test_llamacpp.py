"""llama.cpp's own server and ModelShip's runtime, serving the same SmolLM2 GGUF file, rolled out in turn
on the real control plane: each judged against the other from the router's metrics and mirrored probes.

The llama.cpp image is built from the llama.cpp sources vendored in the pinned llama-cpp-python sdist
(e2e.cluster.llamacpp). One namespace runs the whole sequence: llama.cpp stable; ModelShip canaries rolled
back on injected errors and on drift, then one promoted; llama.cpp canaries rolled back on drift, then one
promoted. Drift between the two servers on the good file (llama.cpp's quantized matmuls against
ModelShip's dequantized float32) is measured on every promotion and must stay under the threshold.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from e2e import smollm2
from e2e.cluster import images
from e2e.cluster.controlplane import ControlPlane
from e2e.modelship import BASE_SPEC, Deployed, merged, readable_by_pods
from e2e.scenarios import FAULTS, ended, healthy, promoted_to_stable

GOOD = f"pvc://models/{smollm2.GOOD}"
BROKEN_ROPE = f"pvc://models/{smollm2.BROKEN_ROPE}"
RATE = 8.0  # requests/s: what both servers answer on one core each, with room for the mirrored probes


@pytest.fixture(scope="module")
def llamacpp_image(control_plane: ControlPlane) -> str:
    tag = images.build_llamacpp()
    control_plane.node.import_image(tag, lambda text: print(f"[cluster] {text}"))
    return tag


@pytest.fixture
def smollm2_volume(deployed: Deployed, models_dir: Path) -> None:
    smollm2.place(models_dir)
    readable_by_pods(models_dir / smollm2.FOLDER)


def spec(image: str) -> dict[str, Any]:
    """SmolLM2 on llama.cpp. The two servers differ in speed (llama.cpp's 4-bit kernels against ModelShip's
    float32), which is not what this test is about: latency is judged by its absolute cap only."""
    return merged(
        BASE_SPEC,
        {
            "model": {"uri": GOOD, "task": "text-generation"},
            "runtime": {
                "server": "llamacpp",
                "image": image,
                "resources": {"requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"cpu": "1", "memory": "2Gi"}},
                "batching": {"maxBatchSize": 4},
                "limits": {"maxInputTokens": 256, "maxNewTokens": 32},
            },
            "rollout": {"analysis": {"thresholds": {"p99LatencySeconds": 3.0, "maxLatencyRatio": 50.0}}},
        },
    )


def note() -> dict[str, str]:
    return {"name": "REVISION_NOTE", "value": str(time.time())}


def on_modelship(deployed: Deployed, uri: str, *env: dict[str, str]) -> None:
    change = {"server": "modelship", "image": None, "args": None, "env": [note(), *env]}
    deployed.patch({"model": {"uri": uri}, "runtime": change})


def on_llamacpp(deployed: Deployed, image: str, *args: str) -> None:
    deployed.patch(
        {"model": {"uri": GOOD}, "runtime": {"server": "llamacpp", "image": image, "args": list(args), "env": [note()]}}
    )


def server_of(deployed: Deployed, revision: str) -> str:
    pod = next(p for p in deployed.pods() if p.metadata.labels["modelship.io/revision"] == revision)
    return str(pod.spec.containers[0].image)


def measured_drift(analysis: list[dict[str, Any]]) -> dict[str, Any]:
    """The drift SLI of an analysis, checked to have been measured from the router's mirrored probes."""
    metrics = {m["name"]: m for m in analysis}
    for sli in ("requests", "errorRate", "p99LatencySeconds"):
        assert "modelship_router_" in metrics[sli]["query"], metrics[sli]
    drift = metrics["drift"]
    assert drift["verdict"] in ("Pass", "Fail"), drift
    assert drift["canarySamples"] > 0, drift
    return dict(drift)


def test_llamacpp_and_modelship_canary_each_other_promoted_when_good_rolled_back_on_errors_and_drift(
    deployed: Deployed, llamacpp_image: str, smollm2_volume: None
) -> None:
    threshold = BASE_SPEC["rollout"]["analysis"]["thresholds"]["drift"]
    stable = healthy(deployed, spec(llamacpp_image))
    container = deployed.pods()[0].spec.containers[0]
    assert container.image == llamacpp_image
    assert {"--parallel", "--cont-batching"} <= set(container.args), container.args
    seen: dict[str, float] = {}
    with deployed.load(rate=RATE) as load:
        time.sleep(2)
        on_modelship(deployed, GOOD, *FAULTS, {"name": "MODELSHIP_FAULT_ERROR_RATE", "value": "0.5"})
        errors = ended(deployed, "RolledBack", after=1)
        assert "error rate" in errors["reason"], errors["reason"]
        assert deployed.status["stableRevision"] == stable

        on_modelship(deployed, BROKEN_ROPE)
        drifted = ended(deployed, "RolledBack", after=2)
        assert "diverge" in drifted["reason"], drifted["reason"]
        seen["modelship canary, broken rope"] = measured_drift(drifted["analysis"])["canary"]

        on_modelship(deployed, GOOD)
        ours = promoted_to_stable(deployed, after=3)["revision"]
        drift = measured_drift(deployed.status["lastAnalysis"]["metrics"])
        assert drift["verdict"] == "Pass", drift
        assert drift["canary"] < threshold, drift
        seen["modelship canary of llama.cpp"] = drift["canary"]
        assert server_of(deployed, ours) != llamacpp_image

        # The other way round: llama.cpp canaries of ModelShip's stable.
        on_llamacpp(deployed, llamacpp_image, "--rope-freq-base", "100")
        drifted = ended(deployed, "RolledBack", after=4)
        assert "diverge" in drifted["reason"], drifted["reason"]
        seen["llama.cpp canary, rope base 100"] = measured_drift(drifted["analysis"])["canary"]
        assert deployed.status["stableRevision"] == ours

        on_llamacpp(deployed, llamacpp_image)
        theirs = promoted_to_stable(deployed, after=5)["revision"]
        drift = measured_drift(deployed.status["lastAnalysis"]["metrics"])
        assert drift["verdict"] == "Pass", drift
        assert drift["canary"] < threshold, drift
        seen["llama.cpp canary of modelship"] = drift["canary"]
        assert server_of(deployed, theirs) == llamacpp_image
        time.sleep(2)
    print(f"mean JS divergence seen: {seen}")
    served = load.report.revisions()
    assert min(served[stable], served[ours], served[theirs]) > 0, served
    # The canary with injected errors answered errors; no other request failed.
    failed = [r for r in load.report.results if r.status != 200 and r.revision != errors["revision"]]
    assert not failed, load.report.describe()
