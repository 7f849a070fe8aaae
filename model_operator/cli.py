"""`modelship`: see and steer rollouts from a terminal, against any cluster kubectl can reach.

modelship status [NAME] [-n NS | -A]     a table of ModelDeployments, or one in detail
modelship history NAME                   how each revision's rollout ended
modelship promote|abort|retry|pause|resume NAME
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from .api.resource import GROUP, PLURAL, VERSION
from .naming import ACTION_ANNOTATION

ACTIONS = ("promote", "abort", "retry", "pause", "resume")


class CliError(Exception):
    """A problem the user can fix; the message says how."""


# ---- pure: what to show and whether an action makes sense ----------------------------------------------
def _age(stamp: str | None, now: datetime) -> str:
    if not stamp:
        return "-"
    seconds = int((now - datetime.fromisoformat(stamp.replace("Z", "+00:00"))).total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{max(seconds, 0)}s"


def table(rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in rows
    )


def step_text(status: dict[str, Any], spec: dict[str, Any]) -> str:
    step = status.get("currentStep")
    total = len(spec.get("rollout", {}).get("steps", [])) or 2
    if not status.get("canaryRevision"):
        return "-"
    return "waiting for pods" if step is None else f"{step + 1}/{total}"


def status_table(items: list[dict[str, Any]], now: datetime, all_namespaces: bool) -> str:
    header = ["NAMESPACE"] if all_namespaces else []
    rows = [[*header, "NAME", "PHASE", "STABLE", "CANARY", "WEIGHT", "STEP", "ANALYSIS", "AGE", "MESSAGE"]]
    for item in items:
        status, meta = item.get("status") or {}, item["metadata"]
        verdict = (status.get("lastAnalysis") or {}).get("verdict", "-") if status.get("canaryRevision") else "-"
        row = [meta["namespace"]] if all_namespaces else []
        row += [
            meta["name"],
            status.get("phase", "Pending"),
            status.get("stableRevision") or "-",
            status.get("canaryRevision") or "-",
            f"{status.get('canaryWeight', 0)}%",
            step_text(status, item.get("spec", {})),
            verdict,
            _age(meta.get("creationTimestamp"), now),
            (status.get("message") or "")[:80],
        ]
        rows.append(row)
    return table(rows)


def detail(item: dict[str, Any], now: datetime) -> str:
    status, meta = item.get("status") or {}, item["metadata"]
    lines = [
        f"{meta['namespace']}/{meta['name']}: {status.get('phase', 'Pending')}",
        f"  {status.get('message', '')}",
        f"  stable {status.get('stableRevision') or '-'} ({status.get('stableReadyReplicas', 0)} ready)"
        + (
            f", canary {status['canaryRevision']} at {status.get('canaryWeight', 0)}% "
            f"({status.get('canaryReadyReplicas', 0)} ready), step {step_text(status, item.get('spec', {}))}"
            if status.get("canaryRevision")
            else ""
        ),
    ]
    if status.get("abortedRevision"):
        lines.append(
            f"  rolled back: {status['abortedRevision']} (not retried until the spec changes, or "
            f"`modelship retry {meta['name']}`)"
        )
    analysis = status.get("lastAnalysis")
    if analysis:
        lines += [
            "",
            f"Last analysis ({_age(analysis.get('time'), now)} ago, step {analysis.get('step', 0) + 1}): "
            f"{analysis.get('verdict')} - {analysis.get('message', '')}",
        ]
        lines += _metrics_table("SLI", analysis.get("metrics", []))
    validation = status.get("validation")
    if validation:
        lines += [
            "",
            f"Validation of {validation.get('revision')} against {validation.get('against')} "
            f"({_age(validation.get('time'), now)} ago): {validation.get('verdict')} - {validation.get('message', '')}",
        ]
        lines += _metrics_table("CHECK", validation.get("metrics", []))
        worst = validation.get("worstPrompts", [])
        if worst:
            rows = [["PROMPT", "DIVERGENCE", "SAME", "CANARY SAID", "STABLE SAID"]]
            rows += [
                [
                    e["name"],
                    _number(e.get("divergence")),
                    "yes" if e.get("exactMatch") else "no",
                    _clip(e.get("canaryAnswer", "")),
                    _clip(e.get("stableAnswer", "")),
                ]
                for e in worst
            ]
            lines += ["  " + line for line in table(rows).splitlines()]
    conditions = status.get("conditions", [])
    if conditions:
        lines += ["", "Conditions:"]
        rows = [["TYPE", "STATUS", "REASON", "SINCE"]]
        rows += [[c["type"], c["status"], c["reason"], _age(c.get("lastTransitionTime"), now)] for c in conditions]
        lines += ["  " + line for line in table(rows).splitlines()]
    return "\n".join(lines)


def _metrics_table(first: str, metrics: Sequence[dict[str, Any]]) -> list[str]:
    rows = [[first, "CANARY", "STABLE", "SAMPLES", "VERDICT", "WHY"]]
    for metric in metrics:
        rows.append(
            [
                metric["name"],
                _number(metric.get("canary")),
                _number(metric.get("stable")),
                f"{metric.get('canarySamples', 0)}/{metric.get('stableSamples', 0)}",
                metric.get("verdict", "-"),
                metric.get("reason", ""),
            ]
        )
    return ["  " + line for line in table(rows).splitlines()]


def _clip(text: str, width: int = 40) -> str:
    flat = " ".join(text.split())
    return repr(flat if len(flat) <= width else flat[: width - 1] + "…")


def _number(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float) and value < 10:
        return f"{value:.4g}"
    return str(value)


def history_table(item: dict[str, Any], now: datetime) -> str:
    history = (item.get("status") or {}).get("history", [])
    if not history:
        return f"{item['metadata']['name']} has no history yet"
    rows = [["REVISION", "RESULT", "STARTED", "ENDED", "REASON"]]
    for entry in reversed(history):
        rows.append(
            [
                entry["revision"],
                entry["result"],
                _age(entry.get("startedAt"), now) + " ago",
                _age(entry.get("finishedAt"), now) + " ago",
                entry.get("reason", ""),
            ]
        )
    return table(rows)


def refusal(action: str, item: dict[str, Any]) -> str | None:
    """Why `action` makes no sense for this ModelDeployment now, or None."""
    status, name = item.get("status") or {}, item["metadata"]["name"]
    canary = status.get("canaryRevision")
    if action in ("promote", "abort") and not canary:
        return f"nothing to {action}: {name} has no canary in progress (see `modelship status {name}`)"
    if action == "retry" and not (status.get("abortedRevision") and status.get("phase") == "Degraded"):
        return f"nothing to retry: {name} has no rolled-back revision that its spec still asks for"
    if action == "pause" and status.get("userPaused"):
        return f"{name} is already paused; `modelship resume {name}` lets it go on"
    if action == "resume" and not status.get("userPaused"):
        return f"{name} is not paused by a user" + (
            " (spec.paused is set: edit the spec)" if (item.get("spec") or {}).get("paused") else ""
        )
    return None


# ---- the adapter ---------------------------------------------------------------------------------------
class Cluster:
    def __init__(self, kubeconfig: str | None, context: str | None) -> None:
        from kubernetes import client, config

        try:
            if kubeconfig or context or not _in_cluster():
                api = config.new_client_from_config(config_file=kubeconfig, context=context)  # type: ignore[no-untyped-call]
            else:
                config.load_incluster_config()  # type: ignore[no-untyped-call]
                api = client.ApiClient()
        except (config.ConfigException, FileNotFoundError, TypeError) as error:
            raise CliError(f"cannot find cluster credentials ({error}); set KUBECONFIG or pass --kubeconfig") from None
        self.custom = client.CustomObjectsApi(api)
        self.namespace = namespace_of(kubeconfig, context)

    def _call(self, function: Any, *args: Any, name: str = "", namespace: str = "", **kwargs: Any) -> Any:
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        try:
            return function(*args, **kwargs)
        except ApiException as error:
            if error.status == 404 and name:
                raise CliError(
                    f"no ModelDeployment {name!r} in namespace {namespace!r}; "
                    f"`modelship status -n {namespace}` lists them"
                ) from None
            if error.status == 404:
                raise CliError(
                    "the cluster has no ModelDeployment API: install it with "
                    "`kubectl apply --server-side -f crds/` (or the Helm chart)"
                ) from None
            if error.status == 403:
                raise CliError(
                    f"permission denied: {error.reason}; ask for get/list/patch on modeldeployments.modelship.io"
                ) from None
            raise CliError(f"the API server said {error.status} {error.reason}") from None
        except HTTPError as error:
            raise CliError(f"cannot reach the API server ({error}); check `kubectl cluster-info`") from None

    def list(self, namespace: str | None) -> list[dict[str, Any]]:
        if namespace is None:
            result = self._call(self.custom.list_cluster_custom_object, GROUP, VERSION, PLURAL)
        else:
            result = self._call(self.custom.list_namespaced_custom_object, GROUP, VERSION, namespace, PLURAL)
        return sorted(result["items"], key=lambda i: (i["metadata"]["namespace"], i["metadata"]["name"]))

    def get(self, namespace: str, name: str) -> dict[str, Any]:
        item: dict[str, Any] = self._call(
            self.custom.get_namespaced_custom_object,
            GROUP,
            VERSION,
            namespace,
            PLURAL,
            name,
            name=name,
            namespace=namespace,
        )
        return item

    def act(self, namespace: str, name: str, action: str) -> None:
        self._call(
            self.custom.patch_namespaced_custom_object,
            GROUP,
            VERSION,
            namespace,
            PLURAL,
            name,
            {"metadata": {"annotations": {ACTION_ANNOTATION: action}}},
            name=name,
            namespace=namespace,
        )


def _in_cluster() -> bool:
    import os

    return bool(os.environ.get("KUBERNETES_SERVICE_HOST")) and not os.environ.get("KUBECONFIG")


def namespace_of(kubeconfig: str | None, context: str | None) -> str:
    """The current context's namespace, as kubectl would use it."""
    from kubernetes import config

    try:
        contexts, current = config.list_kube_config_contexts(config_file=kubeconfig)  # type: ignore[no-untyped-call]
        chosen = next((c for c in contexts if c["name"] == context), current) if context else current
        return str(chosen.get("context", {}).get("namespace") or "default")
    except (config.ConfigException, FileNotFoundError, TypeError, StopIteration):
        return "default"


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="modelship", description="See and steer ModelShip rollouts.")
    root.add_argument("--kubeconfig", help="kubeconfig file (default: $KUBECONFIG or ~/.kube/config)")
    root.add_argument("--context", help="kubeconfig context")
    commands = root.add_subparsers(dest="command", required=True)
    status = commands.add_parser("status", help="list ModelDeployments, or show one in detail")
    status.add_argument("name", nargs="?")
    history = commands.add_parser("history", help="how each revision's rollout ended")
    history.add_argument("name")
    for action, text in (
        ("promote", "promote the canary now, skipping the remaining steps"),
        ("abort", "roll the canary back now"),
        ("retry", "roll out the rolled-back revision again"),
        ("pause", "hold the rollout where it is"),
        ("resume", "let a paused rollout go on"),
    ):
        command = commands.add_parser(action, help=text)
        command.add_argument("name")
    for command in commands.choices.values():
        command.add_argument("-n", "--namespace", help="namespace (default: the context's)")
    status.add_argument("-A", "--all-namespaces", action="store_true")
    return root


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    now = datetime.now(UTC)
    try:
        cluster = Cluster(args.kubeconfig, args.context)
        namespace = args.namespace or cluster.namespace
        if args.command == "status" and args.name is None:
            items = cluster.list(None if args.all_namespaces else namespace)
            if not items:
                where = "any namespace" if args.all_namespaces else f"namespace {namespace!r}"
                print(f"no ModelDeployments in {where}")
            else:
                print(status_table(items, now, args.all_namespaces))
        elif args.command == "status":
            print(detail(cluster.get(namespace, args.name), now))
        elif args.command == "history":
            print(history_table(cluster.get(namespace, args.name), now))
        else:
            item = cluster.get(namespace, args.name)
            problem = refusal(args.command, item)
            if problem:
                raise CliError(problem)
            cluster.act(namespace, args.name, args.command)
            print(
                f"{args.command} requested for {namespace}/{args.name}; `modelship status {args.name}` shows "
                "when the operator has acted"
            )
    except CliError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
