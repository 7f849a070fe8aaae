"""One verdict on a spec: whatever the real API server accepts, the operator accepts as stored (bar its
documented operator-only rules) and can roll out without spinning; whatever it refuses, the operator
refuses too. Specs come from the CRD's own schema and from mutating the examples (e2e/spec_fuzz.py)."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from e2e.kube import Kubectl
from e2e.spec_fuzz import (
    api_server_verdict,
    canary_requeues,
    fuzz_settings,
    mutated_specs,
    only_operator_rules,
    operator_problems,
    schema_specs,
)
from model_operator.api import parse_spec
from model_operator.api import spec as spec_rules
from model_operator.rollout import MIN_REQUEUE_SECONDS

pytestmark = pytest.mark.usefixtures("crds")


def judged(kubectl: Kubectl, namespace: str, spec: dict[str, Any]) -> str:
    """Both verdicts on `spec`, asserting they agree; which way it went."""
    api = api_server_verdict(kubectl, namespace, spec)
    if not api.accepted:
        assert operator_problems(spec), f"the API server refused what the operator accepts: {spec!r}\n{api.message}"
        return "refused"
    assert api.stored is not None
    problems = operator_problems(api.stored)
    if problems:
        assert only_operator_rules(problems), f"the operator refused a stored spec: {api.stored!r}\n{problems}"
        return "operator-only rule"
    requeues = canary_requeues(parse_spec(api.stored))
    assert min(requeues) >= MIN_REQUEUE_SECONDS, (api.stored, requeues)
    return "accepted"


def run_fuzz(kubectl: Kubectl, namespace: str, specs: st.SearchStrategy[dict[str, Any]], examples: int) -> Counter[str]:
    tally: Counter[str] = Counter()

    @fuzz_settings(examples)
    @given(specs)
    def one(spec: dict[str, Any]) -> None:
        tally[judged(kubectl, namespace, spec)] += 1

    one()
    print(f"\n{sum(tally.values())} specs: {dict(tally)}")
    return tally


def test_generated_from_the_crd_schema(kubectl: Kubectl, namespace: str) -> None:
    tally = run_fuzz(kubectl, namespace, schema_specs(), examples=120)
    # Both sides of the line were explored.
    assert tally["accepted"] >= 10, tally
    assert tally["refused"] >= 10, tally


def test_mutated_from_the_examples(kubectl: Kubectl, namespace: str) -> None:
    tally = run_fuzz(kubectl, namespace, mutated_specs(), examples=180)
    assert tally["accepted"] >= 10, tally
    assert tally["refused"] >= 10, tally


MINIMAL = {"model": {"uri": "pvc://models/tiny"}}


@pytest.mark.parametrize(
    "change",
    [
        # The disagreements this test was written for (issue 21), each once.
        {"rollout": {"analysis": {"interval": "0s"}}},
        {"rollout": {"analysis": {"noDataTimeout": "0.0000000001s"}}},
        {"rollout": {"analysis": {"interval": "1ms"}}},
        {"rollout": {"analysis": {"minRequests": "5"}}},
        {"rollout": {"steps": [{"weight": "10"}]}},
        {"traffic": {"mirrorPercent": "5"}},
        {"paused": "true"},
        {"paused": 1},
        {"runtime": {"replicas": True}},
        {"rollout": {"analysis": {"minRequests": 9223372036854775808}}},
        {"runtime": {"tolerations": [{"key": "k", "tolerationSeconds": 10**38}]}},
        {"rollout": {"steps": [{"weight": 10, "pause": "2562048h"}]}},
        {"rollout": {"analysis": {"prometheusUrl": "http://prometheus:9090\n"}}},
        {"runtime": {"resources": {"limits": {"cpu": "lots"}}}},
    ],
    ids=lambda change: repr(change)[:60],
)
def test_reported_disagreements_are_refused_by_both(kubectl: Kubectl, namespace: str, change: dict[str, Any]) -> None:
    spec = MINIMAL | change
    api = api_server_verdict(kubectl, namespace, spec)
    assert not api.accepted, api
    assert "type conversion error" not in api.message, api.message
    assert operator_problems(spec)


HTTP_METRICS = {
    "requests": "http_requests_total",
    "requestsMatch": ['handler=~"/v1/(chat/)?completions"'],
    "serverErrorsMatch": ['status="5xx"'],
    "latency": "http_request_duration_seconds",
}
SERVER_RULES = [
    ({"runtime": {"server": "custom", "custom": {"port": 8000}}}, spec_rules.CUSTOM_NEEDS),
    ({"runtime": {"server": "vllm", "custom": {"port": 8000}}}, spec_rules.CUSTOM_ONLY),
    ({"runtime": {"args": ["--enforce-eager"]}}, spec_rules.ARGS_NOT_FOR_MODELSHIP),
    (
        {"runtime": {"server": "llamacpp"}, "traffic": {"mode": "replicas"}},
        spec_rules.UNMAPPED_SERVER_NEEDS_ROUTER,
    ),
    (
        {"runtime": {"server": "vllm"}, "rollout": {"validation": {"promptsFrom": {"name": "golden"}}}},
        spec_rules.VALIDATION_NEEDS_MODELSHIP,
    ),
    (
        {"runtime": {"server": "custom", "image": "example/server:1", "custom": {"port": 8000}}}
        | {"traffic": {"mode": "replicas"}},
        spec_rules.UNMAPPED_SERVER_NEEDS_ROUTER,
    ),
    (
        {
            "runtime": {
                "server": "custom",
                "image": "example/server:1",
                "custom": {"port": 8000, "metrics": HTTP_METRICS | {"latencyMatch": ['model_deployment="other"']}},
            }
        },
        spec_rules.IDENTITY_MATCHED,
    ),
]


def test_a_custom_server_that_names_its_metrics_is_accepted_outside_router_mode_by_both(
    kubectl: Kubectl, namespace: str
) -> None:
    runtime = {"server": "custom", "image": "example/server:1", "custom": {"port": 9000, "metrics": HTTP_METRICS}}
    spec = MINIMAL | {"runtime": runtime, "traffic": {"mode": "replicas"}}
    api = api_server_verdict(kubectl, namespace, spec)
    assert api.accepted, api.message
    assert api.stored is not None
    assert not operator_problems(api.stored)


@pytest.mark.parametrize(("change", "message"), SERVER_RULES, ids=lambda x: repr(x)[:50])
def test_each_server_rule_is_refused_by_both_in_the_same_words(
    kubectl: Kubectl, namespace: str, change: dict[str, Any], message: str
) -> None:
    spec = MINIMAL | change
    api = api_server_verdict(kubectl, namespace, spec)
    assert not api.accepted, api
    assert message in api.message, api.message
    assert any(message in problem for problem in operator_problems(spec))


@pytest.mark.parametrize("server", ["vllm", "llamacpp", "custom"])
def test_every_server_is_accepted_by_both(kubectl: Kubectl, namespace: str, server: str) -> None:
    runtime: dict[str, Any] = {"server": server, "args": ["--flag", "$(MODEL_PATH)"]}
    if server == "custom":
        runtime |= {"image": "example/server:1", "custom": {"port": 9000, "healthPath": "/ping"}}
    spec = MINIMAL | {"runtime": runtime}
    api = api_server_verdict(kubectl, namespace, spec)
    assert api.accepted, api.message
    assert api.stored is not None
    assert not operator_problems(api.stored)
    assert parse_spec(api.stored).runtime.server == server


@pytest.mark.parametrize("mode", ["replicas", "gatewayAPI"])
def test_vllm_outside_router_mode_is_accepted_by_both(kubectl: Kubectl, namespace: str, mode: str) -> None:
    """vLLM's own metrics are mapped (promql.VLLM), so its revisions can be judged without the router."""
    traffic: dict[str, Any] = {"mode": mode}
    if mode == "gatewayAPI":
        traffic["gateway"] = {"parentRefs": [{"name": "gw"}]}
    spec = MINIMAL | {"runtime": {"server": "vllm"}, "traffic": traffic}
    api = api_server_verdict(kubectl, namespace, spec)
    assert api.accepted, api.message
    assert api.stored is not None
    assert not operator_problems(api.stored)


def test_whole_numbers_are_integers_to_both(kubectl: Kubectl, namespace: str) -> None:
    spec = MINIMAL | {"runtime": {"replicas": 2.0}, "rollout": {"analysis": {"minRequests": 1e3}}}
    api = api_server_verdict(kubectl, namespace, spec)
    assert api.accepted, api.message
    assert not operator_problems(spec)
    assert api.stored is not None
    assert api.stored["rollout"]["analysis"]["minRequests"] == 1000
