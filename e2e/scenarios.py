"""Steps the rollout scenarios share: the tests, the demo and the rollout benchmark all run them."""

from __future__ import annotations

import time
from datetime import datetime
from pathlib import Path
from typing import Any

from e2e.cluster.node import Node
from e2e.modelship import BASE_SPEC, Deployed

FAULTS = [{"name": "MODELSHIP_FAULTS_ENABLED", "value": "true"}]


def healthy(deployed: Deployed, spec: dict[str, Any] = BASE_SPEC) -> str:
    """Apply `spec` and wait until it serves: phase Healthy and Ready (every child applied, e.g. an
    HTTPRoute whose CRD was installed after the operator started, which it notices within 30 s)."""
    deployed.apply(spec)
    deployed.wait_phase("Healthy", timeout=120)
    status = deployed.wait(
        lambda s: any(c["type"] == "Ready" and c["status"] == "True" for c in s.get("conditions", [])),
        "Ready",
        timeout=60,
    )
    return str(status["stableRevision"])


def new_revision(deployed: Deployed, *env: dict[str, str], uri: str | None = None) -> None:
    change: dict[str, Any] = {"runtime": {"env": [{"name": "REVISION_NOTE", "value": str(time.time())}, *env]}}
    if uri:
        change["model"] = {"uri": uri}
    deployed.patch(change)


def ended(deployed: Deployed, result: str, after: int, timeout: float = 180) -> dict[str, Any]:
    """Wait until the history has a new entry with `result`; return it."""
    status = deployed.wait(
        lambda s: (
            len(s.get("history", [])) > after and s["history"][-1]["result"] in ("Promoted", "RolledBack", "Aborted")
        ),
        f"a rollout to end ({result} expected)",
        timeout,
    )
    entry: dict[str, Any] = status["history"][-1]
    assert entry["result"] == result, f"expected {result}, got {entry}"
    return entry


def promoted_to_stable(deployed: Deployed, after: int) -> dict[str, Any]:
    """Wait until the rollout ends Promoted and its revision serves as a Healthy stable; its history entry."""
    entry = ended(deployed, "Promoted", after=after)
    revision = entry["revision"]
    deployed.wait(lambda s: s["stableRevision"] == revision and s["phase"] == "Healthy", "new stable healthy")
    return entry


def process_uid(node: Node, pod: Any) -> int:
    """The real uid, as the machine sees it, of the process of the pod's first container."""
    pid = node.container_pid(pod.status.container_statuses[0].container_id)
    line = next(x for x in Path(f"/proc/{pid}/status").read_text().splitlines() if x.startswith("Uid:"))
    return int(line.split()[1])


def time_to_rollback(deployed: Deployed, load: Any, canary: str, entry: dict[str, Any]) -> tuple[float, float]:
    """(seconds from the canary's first request to the rollback, seconds after it reached minRequests)."""
    finished = datetime.fromisoformat(entry["finishedAt"].replace("Z", "+00:00")).timestamp()
    canary_times = sorted(r.at for r in load.report.results if r.revision == canary)
    assert canary_times, "the canary never took traffic"
    minimum = BASE_SPEC["rollout"]["analysis"]["minRequests"]
    # The analysis counts every canary request, mirrored probes included; the client only sees its own.
    reached = canary_times[min(len(canary_times), minimum) - 1]
    return finished - canary_times[0], finished - reached
