"""The golden-prompt gate on a real control plane: the operator, from the chart, sends the golden set to a
Ready canary and to stable through their Services before the canary gets any weight."""

from __future__ import annotations

import json
import time
from typing import Any

import yaml

from e2e.modelship import BASE_SPEC, Deployed, merged
from e2e.scenarios import ended, healthy, new_revision
from model_runtime.tinymodel import CORPUS

GOLDEN = [
    {"name": "greeting", "prompt": "hello world, how are you", "maxTokens": 8},
    {"name": "fox", "prompt": "the quick brown fox", "maxTokens": 8},
    {"name": "chat", "messages": [{"role": "user", "content": "a model serves requests"}], "maxTokens": 8},
    # Far past tinymodel.FAR_POSITION tokens: only this one reaches the positions a far-permuted canary broke.
    {"name": "long-document", "prompt": " ".join(CORPUS), "maxTokens": 8},
]
GATED = merged(BASE_SPEC, {"rollout": {"validation": {"promptsFrom": {"name": "golden"}}}})


def golden_config_map(deployed: Deployed) -> None:
    deployed.kubectl.apply(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": "golden", "namespace": deployed.namespace},
                "data": {"prompts.json": json.dumps(GOLDEN)},
            }
        )
    )


def metric(record: dict[str, Any], name: str) -> dict[str, Any]:
    return next(m for m in record["metrics"] if m["name"] == name)


def test_a_missing_golden_set_holds_the_canary_and_an_identical_model_then_passes(deployed: Deployed) -> None:
    stable = healthy(deployed, GATED)
    new_revision(deployed)  # the same model under a new revision
    held = deployed.wait(
        lambda s: any(c["type"] == "Validated" and c["reason"] == "ValidationBlocked" for c in s.get("conditions", [])),
        "validation blocked by the missing ConfigMap",
        timeout=120,
    )
    assert held["phase"] == "Validating"
    assert held["canaryWeight"] == 0
    assert "ConfigMap" in held["message"]
    assert "golden not found" in held["message"]
    assert deployed.condition("Stalled")["reason"] == "ValidationBlocked"
    # The gate is tried again (every 15 s): still held, nothing decided by accident.
    later = deployed.wait(
        lambda s: (s.get("validation") or {}).get("time") not in (None, held["validation"]["time"]),
        "validation to be tried again",
        timeout=60,
    )
    assert (later["phase"], later["canaryWeight"], later["canaryRevision"]) == ("Validating", 0, held["canaryRevision"])
    assert later["history"][-1]["result"] == "Deployed"
    assert "ValidationBlocked" in deployed.events()

    with deployed.load(rate=25) as load:  # the steps after validation need requests on both tracks
        golden_config_map(deployed)
        entry = ended(deployed, "Promoted", after=1, timeout=180)
    assert not load.report.failures, load.report.describe()
    status = deployed.status
    record = status["validation"]
    assert (record["revision"], record["against"], record["verdict"]) == (entry["revision"], stable, "Pass")
    assert metric(record, "tokenizer")["verdict"] == "Pass"
    assert metric(record, "tokenIds")["verdict"] == "Pass"
    assert metric(record, "exactMatch")["canary"] == 1.0
    assert metric(record, "divergence")["canary"] < 1e-6  # the same model; batches differ in the last bits
    prints = status["fingerprints"]
    assert prints[entry["revision"]] == prints[stable] or stable not in prints
    assert prints[entry["revision"]]["tokenizer"]
    assert "ValidationPassed" in deployed.events()
    print(f"\n[figure] identical model: validation {record['message']}")


def test_b_a_swapped_tokenizer_and_far_positions_are_rolled_back_before_any_traffic(deployed: Deployed) -> None:
    golden_config_map(deployed)
    stable = healthy(deployed, GATED)
    with deployed.load(rate=10) as load:
        time.sleep(2)
        new_revision(deployed, uri="pvc://models/tiny-swapped-tokenizer")
        swapped = ended(deployed, "RolledBack", after=0, timeout=180)
        status = deployed.status
        new_revision(deployed, uri="pvc://models/tiny-far-permuted")
        far = deployed.wait(
            lambda s: (
                s["history"][-1]["result"] == "RolledBack" and s["history"][-1]["revision"] != swapped["revision"]
            ),
            "the far-permuted canary to be rolled back",
            timeout=180,
        )["history"][-1]
        far_status = deployed.status
        time.sleep(1)
    assert not load.report.failures, load.report.describe()
    served = load.report.revisions()
    assert set(served) == {stable}, f"a canary got user traffic: {served}"
    events = deployed.events()
    assert events.count("RolloutStarted") == 2
    assert "StepStarted" not in events  # neither canary ever got a weight above 0
    assert "TokenizerChanged" in events

    assert swapped["reason"].startswith("validation failed: ")
    assert "tokenizer changed" in swapped["reason"]
    swapped_checks = {m["name"]: m["verdict"] for m in swapped["analysis"]}
    assert (swapped_checks["tokenizer"], swapped_checks["tokenIds"]) == ("Fail", "Fail")
    assert status["validation"]["verdict"] == "Fail"
    assert status["fingerprints"][swapped["revision"]]["tokenizer"] != status["fingerprints"][stable]["tokenizer"]
    assert next(c for c in status["conditions"] if c["type"] == "TokenizerChanged")["status"] == "True"

    verdicts = {m["name"]: m["verdict"] for m in far["analysis"]}
    assert (verdicts["tokenizer"], verdicts["exactMatch"], verdicts["divergence"]) == ("Pass", "Pass", "Fail"), far
    worst = far_status["validation"]["worstPrompts"][0]
    assert worst["name"] == "long-document"
    assert far_status["canaryWeight"] == 0
    print(
        f"\n[figure] swapped tokenizer: {swapped['reason'][:160]}"
        f"\n[figure] far positions permuted: {metric(far_status['validation'], 'divergence')['reason']}"
    )
