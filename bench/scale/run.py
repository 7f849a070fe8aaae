"""The operator at fleet size: ModelDeployments created in batches up to 500, then rolled out in waves, on
a real control plane whose extra nodes and pods are kwok's (marked Running and Ready, never run).

    python -m bench.scale.run [--sizes 50,200,500] [--wave 50]

It brings up its own local control plane, installs the chart (two operator replicas, as users get them),
registers fake nodes that kwok manages, and creates ModelDeployments whose model pods are pinned to those
nodes (`runtime.nodeSelector`) in `replicas` traffic mode (no router pods). Beside them, `--real` (5 by
default) ModelDeployments serve the tiny GPT-2 for real on the real node, behind their routers, with load
running through them the whole time; before each wave they roll out too (and must be promoted). At each
size it measures:

* reconcile latency: from the create (or the spec change) to the status that reports the new generation,
  seen by a watch; P50 and P99 over the batch;
* the leading operator's resident memory, and per ModelDeployment;
* the real ModelDeployments' rollouts (each must be promoted) and the load's failed requests (none may fail);
* API requests per second the whole cluster served (apiserver_request_total), and Prometheus queries per
  second (prometheus_http_requests_total on /api/v1/query), while the wave's canaries are analysed.

The fake pods export nothing; one synthetic exporter (bench/scale/exporter.py), which Prometheus scrapes,
serves the runtime's SLI series for every revision the statuses name, both tracks alike, so every canary's
analysis judges real data (and passes, holding at its step until the pause ends).
"""

from __future__ import annotations

import argparse
import math
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from kubernetes import client, config, watch

from e2e.cluster import tools
from e2e.cluster.controlplane import ClusterInfo, ControlPlane
from e2e.kube import Kubectl, wait_until
from e2e.leadership import container_pid, leader_pod
from e2e.load import LoadGenerator
from e2e.modelship import BASE_SPEC, Deployed, install_operator, model_volume, readable_by_pods
from model_runtime.tinymodel import build as build_tiny_model

from .exporter import FleetSLIs
from .exporter import start as start_exporter

NAMESPACE = "fleet"
REAL_NAMESPACE = "serving"
EXPORTER = ("127.0.0.1", 9650)  # inside the cluster's network namespace, where Prometheus runs
GROUP, VERSION, PLURAL = "modelship.io", "v1alpha1", "modeldeployments"
PODS_PER_NODE = 250
FAKE_NODE_LABEL = {"type": "kwok"}
FAKE_NODE_TAINT = {"key": "kwok.x-k8s.io/node", "value": "fake", "effect": "NoSchedule"}  # real pods stay off
FLEET_SPEC: dict[str, Any] = {
    "model": {"uri": "pvc://models/tiny"},
    "runtime": {
        "replicas": 1,
        "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}},
        "nodeSelector": FAKE_NODE_LABEL,
        "tolerations": [{"key": FAKE_NODE_TAINT["key"], "operator": "Exists", "effect": "NoSchedule"}],
    },
    "traffic": {"mode": "replicas"},
    "rollout": {"steps": [{"weight": 20, "pause": "10m"}], "analysis": {"interval": "30s"}},
}


def fake_node(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "annotations": {"kwok.x-k8s.io/node": "fake", "node.alpha.kubernetes.io/ttl": "0"},
            "labels": {**FAKE_NODE_LABEL, "kubernetes.io/hostname": name},
        },
        "spec": {"taints": [FAKE_NODE_TAINT]},
        "status": {
            "allocatable": {"cpu": "256", "memory": "1Ti", "pods": str(PODS_PER_NODE)},
            "capacity": {"cpu": "256", "memory": "1Ti", "pods": str(PODS_PER_NODE)},
        },
    }


def kwok_stages() -> list[Path]:
    source = tools.module_source(tools.KWOK) / "kustomize" / "stage"
    return [
        source / "node" / "fast" / "node-initialize.yaml",
        source / "node" / "heartbeat" / "node-heartbeat.yaml",
        *(source / "pod" / "fast" / f"pod-{stage}.yaml" for stage in ("ready", "complete", "delete")),
    ]


@dataclass
class Seen:
    """When a watch first saw each ModelDeployment's status report a generation."""

    reported: dict[tuple[str, int], float]


def watch_status(custom: client.CustomObjectsApi, seen: Seen, slis: FleetSLIs, stop: threading.Event) -> None:
    while not stop.is_set():
        stream = watch.Watch()
        try:
            for event in stream.stream(
                custom.list_namespaced_custom_object, GROUP, VERSION, NAMESPACE, PLURAL, timeout_seconds=30
            ):
                body = event["object"]
                status = body.get("status") or {}
                generation = status.get("observedGeneration")
                revisions = [status.get("stableRevision"), status.get("canaryRevision")]
                slis.serve(body["metadata"]["name"], [r for r in revisions if r])
                if generation:
                    seen.reported.setdefault((body["metadata"]["name"], int(generation)), time.monotonic())
                if stop.is_set():
                    break
        except Exception as error:  # a dropped watch is reopened; the timestamps are kept
            print(f"  (watch reopened: {type(error).__name__})", file=sys.stderr)


def all_healthy(custom: client.CustomObjectsApi, names: set[str]) -> bool:
    items = custom.list_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL)["items"]
    return all((o.get("status") or {}).get("phase") == "Healthy" for o in items if o["metadata"]["name"] in names)


def verdicts(custom: client.CustomObjectsApi) -> dict[str, int]:
    """The latest analysis verdict of every canary in flight."""
    found: dict[str, int] = {}
    for item in custom.list_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL)["items"]:
        status = item.get("status") or {}
        if status.get("canaryRevision"):
            verdict = (status.get("lastAnalysis") or {}).get("verdict", "none yet")
            found[verdict] = found.get(verdict, 0) + 1
    return found


def serve_for_real(
    kubectl: Kubectl, core: client.CoreV1Api, custom: client.CustomObjectsApi, count: int
) -> list[Deployed]:
    """`count` ModelDeployments of the tiny GPT-2 on the real node, each Healthy and behind its router."""
    if not count:
        return []
    models = Path(tempfile.mkdtemp(prefix="scale-models-"))
    build_tiny_model(models / "tiny")
    readable_by_pods(models)
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=REAL_NAMESPACE)))
    wait_until(lambda: core.list_namespaced_service_account(REAL_NAMESPACE).items, "default ServiceAccount", 30)
    model_volume(kubectl, REAL_NAMESPACE, models)
    deployed = [Deployed(kubectl, core, custom, REAL_NAMESPACE, f"real{index}") for index in range(count)]
    for one in deployed:
        one.apply(BASE_SPEC)
    for one in deployed:
        one.wait_phase("Healthy", timeout=600)
    return deployed


def roll_out_for_real(deployed: list[Deployed], size: int) -> list[dict[str, Any] | None]:
    """A new revision for each real ModelDeployment; returns the history entry each rollout starts after."""
    since = [one.last_entry() for one in deployed]
    for one in deployed:
        one.patch({"runtime": {"env": [{"name": "WAVE", "value": f"{size}-{time.time()}"}]}})
    return since


def counter_total(text: str, name: str, must: str = "") -> float:
    return sum(
        float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name + "{") and must in line
    )


def api_requests(kubectl: Kubectl) -> float:
    return counter_total(kubectl("get", "--raw", "/metrics").stdout, "apiserver_request_total")


def prometheus_queries(info: ClusterInfo) -> float:
    import urllib.request

    text = urllib.request.urlopen(f"{info.prometheus}/metrics", timeout=10).read().decode()
    return counter_total(text, "prometheus_http_requests_total", 'handler="/api/v1/query"')


def operator_rss_mib(core: client.CoreV1Api, plane: ControlPlane) -> float:
    pid = container_pid(plane.node, leader_pod(core))
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1)]


def latencies(seen: Seen, started: dict[str, float], generation: dict[str, int], timeout: float) -> list[float]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        missing = [n for n in started if (n, generation[n]) not in seen.reported]
        if not missing:
            break
        time.sleep(0.5)
    else:
        raise AssertionError(f"{len(missing)} ModelDeployments never reported their generation, e.g. {missing[:3]}")
    return [seen.reported[(n, generation[n])] - started[n] for n in started]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.scale.run", description=__doc__)
    parser.add_argument("--sizes", default="50,200,500", help="fleet sizes to measure, rising")
    parser.add_argument("--wave", type=int, default=50, help="ModelDeployments changed at once per wave")
    parser.add_argument(
        "--api-workers", type=int, default=32, help="the chart's apiWorkers (6 is asyncio's default on 2 cores)"
    )
    parser.add_argument("--real", type=int, default=5, help="ModelDeployments serving for real, with load")
    parser.add_argument("--keep", action="store_true", help="leave the cluster up afterwards")
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    tools.build(tools.KWOK)
    plane = ControlPlane("scale", scrape_interval="15s", scrape_targets=(f"{EXPORTER[0]}:{EXPORTER[1]}",))
    # Only the operator runs for real here: a store of its own, so the bench can run beside another cluster.
    info = plane.up(private_store=("operator", "runtime") if args.real else ("operator",))
    plane.enter()
    slis = FleetSLIs(NAMESPACE)
    exporter = start_exporter(slis, *EXPORTER)
    kwok: subprocess.Popen[bytes] | None = None
    loads: list[LoadGenerator] = []
    try:
        kubectl = Kubectl(info.kubeconfig)
        api = config.new_client_from_config(config_file=info.kubeconfig)
        core, custom = client.CoreV1Api(api), client.CustomObjectsApi(api)
        kubectl("apply", "--server-side", "-f", str(Path(__file__).resolve().parents[2] / "crds"))
        kubectl.wait_established("modeldeployments.modelship.io")
        install_operator(info, kubectl, apiWorkers=str(args.api_workers))
        nodes = math.ceil(max(sizes) * 2 / PODS_PER_NODE) + 1  # stable and canary pods during a wave
        for index in range(nodes):
            core.create_node(fake_node(f"kwok-{index}"))  # type: ignore[arg-type]
        log = (plane.root / "logs" / "kwok.log").open("wb")
        kwok = subprocess.Popen(
            [
                str(tools.KWOK.binary("kwok")),
                f"--kubeconfig={info.kubeconfig}",
                "--manage-all-nodes=false",
                "--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake",
                # Fake pod addresses, unroutable in the cluster's namespace (it has no default route).
                "--cidr=10.250.0.0/16",
                "--node-ip=10.250.255.254",
                # kwok's own "fast" stages: nodes Ready at once, pods Running and Ready once scheduled.
                *(f"--config={stage}" for stage in kwok_stages()),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        wait_until(
            lambda: (
                sum(
                    any(c.type == "Ready" and c.status == "True" for c in n.status.conditions or [])
                    for n in core.list_node(label_selector="type=kwok").items
                )
                == nodes
            ),
            f"{nodes} kwok nodes Ready",
            60,
        )
        core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=NAMESPACE)))
        wait_until(lambda: core.list_namespaced_service_account(NAMESPACE).items, "default ServiceAccount", 30)
        model_volume(kubectl, NAMESPACE, Path("/nonexistent-models"))  # fake pods never read it
        real = serve_for_real(kubectl, core, custom, args.real)
        loads = [one.load(rate=5.0) for one in real]
        for load in loads:
            load.__enter__()
        seen = Seen({})
        stop = threading.Event()
        watcher = threading.Thread(target=watch_status, args=(custom, seen, slis, stop), daemon=True)
        watcher.start()
        rows = []
        created = 0
        for size in sizes:
            started, generation = {}, {}
            for index in range(created, size):
                name = f"m{index:04d}"
                body = {
                    "apiVersion": f"{GROUP}/{VERSION}",
                    "kind": "ModelDeployment",
                    "metadata": {"name": name},
                    "spec": FLEET_SPEC,
                }
                started[name] = time.monotonic()
                generation[name] = 1
                custom.create_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL, body)
            create = latencies(seen, started, generation, timeout=600)
            created = size
            batch = set(started)
            wait_until(partial(all_healthy, custom, batch), f"the {len(batch)} new ModelDeployments Healthy", 900)
            time.sleep(20)  # let the fleet settle: every loop past its first reconciles
            rss = operator_rss_mib(core, plane)
            # A wave: `wave` ModelDeployments get a new revision at once.
            names = [f"m{index:04d}" for index in range(max(0, size - args.wave), size)]  # not yet rolling out
            # The real ones roll out first, so the wave is measured with their new pods serving, not starting.
            real_since = roll_out_for_real(real, size)
            real_results = [
                one.wait_rollout_end(since, "the real rollout's end", timeout=600)["result"]
                for one, since in zip(real, real_since, strict=True)
            ]
            api_before, queries_before, window_start = api_requests(kubectl), prometheus_queries(info), time.monotonic()
            started, generation = {}, {}
            for name in names:
                patched = custom.patch_namespaced_custom_object(
                    GROUP,
                    VERSION,
                    NAMESPACE,
                    PLURAL,
                    name,
                    {"spec": {"runtime": {"env": [{"name": "WAVE", "value": f"{size}-{time.time()}"}]}}},
                )
                started[name] = time.monotonic()
                generation[name] = int(patched["metadata"]["generation"])
            wave = latencies(seen, started, generation, timeout=600)
            time.sleep(max(0.0, 60 - (time.monotonic() - window_start)))
            seconds = time.monotonic() - window_start
            row: dict[str, Any] = {
                "size": size,
                "create_p50": statistics.median(create),
                "create_p99": percentile(create, 0.99),
                "wave_p50": statistics.median(wave),
                "wave_p99": percentile(wave, 0.99),
                "rss_mib": rss,
                "api_rps": (api_requests(kubectl) - api_before) / seconds,
                "queries_ps": (prometheus_queries(info) - queries_before) / seconds,
                "verdicts": verdicts(custom),
                "real": real_results,
                "failed": sum(len(load.report.failures) for load in loads),
                "answered": sum(len(load.report.results) for load in loads),
            }
            rows.append(row)
            print(
                f"[{size}, {args.api_workers} workers] create P50 {row['create_p50']:.2f}s "
                f"P99 {row['create_p99']:.2f}s | wave of {len(names)}: "
                f"P50 {row['wave_p50']:.2f}s P99 {row['wave_p99']:.2f}s | operator RSS {rss:.0f} MiB | "
                f"{row['api_rps']:.0f} API req/s | {row['queries_ps']:.1f} Prometheus queries/s | "
                f"canaries' last verdicts {row['verdicts']} | real rollouts {row['real']}, "
                f"{row['failed']} of {row['answered']} requests failed",
                flush=True,
            )
        stop.set()
        print(
            "\n| ModelDeployments | reconcile P50 / P99 after create | after a spec change (wave) | operator RSS "
            "| per ModelDeployment | API requests/s | Prometheus queries/s |"
        )
        print("|---|---|---|---|---|---|---|")
        base = rows[0]
        for row in rows:
            per = (row["rss_mib"] - base["rss_mib"]) / (row["size"] - base["size"]) if row is not base else math.nan
            shown = "-" if math.isnan(per) else f"{per * 1024:.0f} KiB"
            print(
                f"| {row['size']} | {row['create_p50']:.2f} / {row['create_p99']:.2f} s | "
                f"{row['wave_p50']:.2f} / {row['wave_p99']:.2f} s | {row['rss_mib']:.0f} MiB | "
                f"{shown} | {row['api_rps']:.0f} | {row['queries_ps']:.1f} |"
            )
        failed = [r for load in loads for r in load.report.failures]
        if failed or any(result != "Promoted" for row in rows for result in row["real"]):
            print(
                f"FAILED: {len(failed)} failed requests, e.g. {failed[:3]}; real rollouts {[r['real'] for r in rows]}"
            )
            return 1
    finally:
        for load in loads:
            load.stop()
        exporter.shutdown()
        if kwok is not None:
            kwok.terminate()
        if not args.keep:
            plane.down()
    return 0


if __name__ == "__main__":
    sys.exit(main())
