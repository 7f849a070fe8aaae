"""A server other than ModelShip's runtime, rolled out on the real control plane with the same judgment.

The other server is ModelShip's own runtime image run as `runtime.server: custom`: an OpenAI-compatible
image the operator knows nothing about. It is told only `$(MODEL_PATH)` and `$(MODEL_NAME)`, and no
ModelShip identity, so its own metrics name no ModelDeployment or revision. In router mode every verdict
comes from the router's per-revision metrics; a stable on the custom server is then replaced by a canary
on ModelShip's runtime, both still judged from the router. In replicas mode there is no router: the spec
names the server's own metrics, Prometheus gives them the revision from the pod's labels, and the verdict
comes from them.
"""

from __future__ import annotations

import time
from typing import Any

from e2e.cluster.controlplane import ClusterInfo
from e2e.modelship import BASE_SPEC, Deployed, merged
from e2e.scenarios import FAULTS, ended, healthy, promoted_to_stable

SERVER_ENV = [
    {"name": "MODELSHIP_MODEL_PATH", "value": "$(MODEL_PATH)"},
    {"name": "MODELSHIP_MODEL_NAME", "value": "$(MODEL_NAME)"},
]


def custom_spec(image: str) -> dict[str, Any]:
    return merged(
        BASE_SPEC,
        {
            "runtime": {
                "server": "custom",
                "image": image,
                "args": ["serve"],
                "custom": {"port": 8080, "healthPath": "/health/ready"},
                "env": SERVER_ENV,
            }
        },
    )


def new_custom_revision(deployed: Deployed, *env: dict[str, str]) -> None:
    note = {"name": "REVISION_NOTE", "value": str(time.time())}
    deployed.patch({"runtime": {"env": [*SERVER_ENV, note, *env]}})


def judged_by_the_router(analysis: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The SLIs of an analysis (a rollback's evidence, or the last look before a promotion), checked to come
    from the router with content reported as not measured."""
    metrics = {m["name"]: m for m in analysis}
    for sli in ("requests", "errorRate", "p99LatencySeconds"):
        assert "modelship_router_" in metrics[sli]["query"], metrics[sli]
    assert metrics["contentIssues"]["verdict"] == "NotMeasured", metrics["contentIssues"]
    assert "runtime.server custom" in metrics["contentIssues"]["reason"]
    return metrics


def test_a_custom_server_is_promoted_rolled_back_on_errors_and_replaced_by_modelships_runtime(
    deployed: Deployed, cluster: ClusterInfo
) -> None:
    stable = healthy(deployed, custom_spec(cluster.runtime_image))
    variables = {v.name for v in deployed.pods()[0].spec.containers[0].env}
    assert "MODELSHIP_REVISION" not in variables  # the operator told the custom server nothing of ModelShip
    assert {"MODEL_PATH", "MODEL_NAME"} <= variables
    with deployed.load(rate=25) as load:
        time.sleep(2)
        new_custom_revision(deployed)
        good = promoted_to_stable(deployed, after=1)["revision"]
        last = deployed.status["lastAnalysis"]  # a promotion keeps the look it passed on
        assert last["verdict"] == "Pass", last
        passed = judged_by_the_router(last["metrics"])
        assert passed["requests"]["canarySamples"] >= BASE_SPEC["rollout"]["analysis"]["minRequests"]
        good_until = time.time()

        new_custom_revision(deployed, *FAULTS, {"name": "MODELSHIP_FAULT_ERROR_RATE", "value": "0.5"})
        rolled_back = ended(deployed, "RolledBack", after=2)
        assert "error rate" in rolled_back["reason"], rolled_back["reason"]
        judged_by_the_router(rolled_back["analysis"])
        assert deployed.status["stableRevision"] == good
        assert deployed.status["canaryWeight"] == 0

        # The other way round: the same model on ModelShip's runtime, canaried against the custom stable,
        # whose own metrics name no revision: both are still judged from the router.
        deployed.patch({"runtime": {"server": "modelship", "image": None, "args": None, "custom": None, "env": None}})
        replaced = ended(deployed, "Promoted", after=3)
        judged_by_the_router(deployed.status["lastAnalysis"]["metrics"])
        time.sleep(2)
    assert not [r for r in load.report.results if r.at < good_until and r.status != 200], load.report.describe()
    served = load.report.revisions()
    assert served[stable] > 0
    assert served[good] > 0
    assert served[replaced["revision"]] > 0
    deployed.wait(lambda s: s["phase"] == "Healthy", "healthy on ModelShip's runtime")
    ours = next(p for p in deployed.pods() if p.metadata.labels["modelship.io/revision"] == replaced["revision"])
    assert ours.spec.containers[0].args == ["serve"]
    assert "MODELSHIP_REVISION" in {v.name for v in ours.spec.containers[0].env}


# The runtime's metrics as any server's: names and labels the operator is told only by the spec.
ANSWERED = 'endpoint=~"completions|chat_completions"'
OWN_METRICS = {
    "requests": "modelship_requests_total",
    "requestsMatch": [ANSWERED, 'source="user"'],
    "serverErrorsMatch": ['code=~"5.."'],
    "latency": "modelship_request_duration_seconds",
    "latencyMatch": [ANSWERED, 'source="user"'],
}


def test_a_custom_server_that_names_its_metrics_is_judged_from_them_without_a_router(
    deployed: Deployed, cluster: ClusterInfo
) -> None:
    spec = merged(
        custom_spec(cluster.runtime_image),
        {
            "runtime": {"custom": {"metrics": OWN_METRICS}},
            "traffic": {"mode": "replicas", "mirrorPercent": 0},
        },
    )
    healthy(deployed, spec)
    with deployed.load(rate=25, component="model"):
        time.sleep(2)
        new_custom_revision(deployed, *FAULTS, {"name": "MODELSHIP_FAULT_ERROR_RATE", "value": "0.5"})
        rolled_back = ended(deployed, "RolledBack", after=1)
    assert "error rate" in rolled_back["reason"], rolled_back["reason"]
    metrics = {m["name"]: m for m in rolled_back["analysis"]}
    for sli, metric in (("requests", "modelship_requests_total"), ("errorRate", "modelship_requests_total")):
        assert f"increase({metric}{{" in metrics[sli]["query"], metrics[sli]
        assert "modelship_router_" not in metrics[sli]["query"]
    assert 'code=~"5.."' in metrics["errorRate"]["query"]
    assert "modelship_request_duration_seconds_bucket" in metrics["p99LatencySeconds"]["query"]
    # Both revisions' own series were found under their revisions: Prometheus labelled them from the pods.
    assert metrics["requests"]["canarySamples"] > 0, metrics["requests"]
    assert metrics["requests"]["stableSamples"] > 0, metrics["requests"]
    assert metrics["contentIssues"]["verdict"] == "NotMeasured", metrics["contentIssues"]
