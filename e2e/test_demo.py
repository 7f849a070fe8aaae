"""README's first command, run by the second: the demo's whole story (`--tiny`) on the suite's cluster."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

from kubernetes import client

from e2e.cluster.controlplane import ControlPlane
from e2e.kube import Kubectl

REPO = Path(__file__).resolve().parents[1]


def test_the_demo_promotes_a_good_canary_and_rolls_back_a_bad_one(
    control_plane: ControlPlane, operator: str, kubectl: Kubectl, core: client.CoreV1Api, tmp_path: Path
) -> None:
    namespace = f"demo-smoke-{uuid.uuid4().hex[:5]}"
    timeline = tmp_path / "timeline.png"
    try:
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "e2e.demo",
                "--tiny",
                "--cluster",
                control_plane.name,
                "--namespace",
                namespace,
                "--out",
                str(timeline),
            ],
            capture_output=True,
            text=True,
            timeout=900,
            check=False,
            cwd=REPO,
            env={**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "160"},
        )
        output = result.stdout + result.stderr
        assert result.returncode == 0, output[-6000:]
        history = next(line for line in output.splitlines() if "history:" in line)
        results = [entry.split()[-1] for entry in history.split("history:", 1)[1].split(",")]
        assert results[-3:] == ["Deployed", "Promoted", "RolledBack"], history
        assert "RolledBack:" in output  # the rollback's event, printed as it happened
        assert timeline.stat().st_size > 20_000  # a rendered figure, not an empty canvas
    finally:
        kubectl("delete", "namespace", namespace, "--wait=false", check=False)
        kubectl("delete", "pv", f"models-{namespace}", "--wait=false", check=False)
