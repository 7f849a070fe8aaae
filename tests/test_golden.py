"""The golden-prompt gate: the judgment's table (golden.compare), the golden set's reading, and the client
against real runtimes serving the tiny model and its deliberately broken variants."""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from model_operator.api.spec import ChatMessage, ConfigMapKey, Expectation, GoldenPrompt, Validation
from model_operator.api.status import Fingerprints, Verdict
from model_operator.golden import Answer, Refusal, RevisionAnswers, agreeing_positions, compare, meets
from model_operator.golden_client import golden_set, request_of, validate
from model_runtime.contract import REQUESTS_TOTAL, SOURCE_LABEL, SOURCE_VALIDATION
from model_runtime.tinymodel import CORPUS
from tests.metrics_helpers import sample
from tests.process_helpers import free_port
from tests.runtime_helpers import running_app

PROMPTS = [
    GoldenPrompt(name="a", prompt="hello"),
    GoldenPrompt(name="b", prompt="the fox", expect=Expectation(contains="dog")),
    GoldenPrompt(name="c", messages=[ChatMessage(role="user", content="hi")]),
]
RULES = Validation(prompts=PROMPTS)
PRINTS = Fingerprints(tokenizer="t1", config="c1")
SURE = {"x": math.log(0.9), "y": math.log(0.05)}
UNSURE = {"x": math.log(0.4), "y": math.log(0.4)}


def answer(
    text: str = "the lazy dog", top: Mapping[str, float] = SURE, seconds: float = 0.1, ids: tuple[int, ...] = (1, 2)
) -> Answer:
    return Answer(text=text, tokens=("x", "y", "z"), top=(top, top, top), seconds=seconds, prompt_ids=ids)


def revision(name: str, answers: Mapping[str, Answer | Refusal], prints: Fingerprints = PRINTS) -> RevisionAnswers:
    return RevisionAnswers(name, prints, answers)


def same_everywhere(**changed: Answer | Refusal) -> dict[str, Answer | Refusal]:
    return {p.name: answer() for p in PROMPTS} | changed


def verdicts(outcome: Any) -> dict[str, Verdict]:
    return {m.name: m.verdict for m in outcome.metrics}


STABLE = revision("s1", same_everywhere())
CASES = [
    pytest.param(revision("c1", same_everywhere()), RULES, Verdict.PASS, {}, id="identical"),
    pytest.param(
        revision("c1", same_everywhere(), Fingerprints(tokenizer="t2", config="c1")),
        RULES,
        Verdict.FAIL,
        {"tokenizer": Verdict.FAIL},
        id="tokenizer changed",
    ),
    pytest.param(
        revision("c1", same_everywhere(), Fingerprints(tokenizer="t2", config="c1")),
        Validation(prompts=PROMPTS, allow_tokenizer_change=True),
        Verdict.PASS,
        {"tokenizer": Verdict.PASS},
        id="tokenizer change intended",
    ),
    pytest.param(
        revision("c1", same_everywhere(), Fingerprints()),
        RULES,
        Verdict.PASS,
        {"tokenizer": Verdict.NO_DATA},
        id="no digest is not measured, not passed",
    ),
    pytest.param(
        revision("c1", same_everywhere(b=answer(ids=(2, 1)))),
        RULES,
        Verdict.FAIL,
        {"tokenIds": Verdict.FAIL, "tokenizer": Verdict.PASS},
        id="one prompt tokenized differently",
    ),
    pytest.param(
        revision("c1", same_everywhere(b=answer(ids=(2, 1)))),
        Validation(prompts=PROMPTS, allow_tokenizer_change=True),
        Verdict.PASS,
        {"tokenIds": Verdict.PASS},
        id="tokenized differently, intended",
    ),
    pytest.param(
        revision("c1", {p.name: dataclasses.replace(answer(), prompt_ids=None) for p in PROMPTS}),
        RULES,
        Verdict.PASS,
        {"tokenIds": Verdict.NO_DATA},
        id="no /tokenize: token ids not measured",
    ),
    pytest.param(
        revision("c1", same_everywhere(a=answer(top=UNSURE))),
        RULES,
        Verdict.FAIL,
        {"divergence": Verdict.FAIL, "exactMatch": Verdict.PASS},
        id="one prompt diverges",
    ),
    pytest.param(
        revision("c1", same_everywhere(a=answer("no"), c=answer("no"))),
        RULES,
        Verdict.FAIL,
        {"exactMatch": Verdict.FAIL},
        id="most answers differ",
    ),
    pytest.param(
        revision("c1", same_everywhere(b=answer("the lazy cat"))),
        RULES,
        Verdict.FAIL,
        {"correctness": Verdict.FAIL, "exactMatch": Verdict.PASS},
        id="right answer lost",
    ),
    pytest.param(
        revision("c1", same_everywhere(b=answer("the lazy cat"))),
        Validation(prompts=PROMPTS, max_correctness_drop=1),
        Verdict.PASS,
        {"correctness": Verdict.PASS},
        id="right answer lost within the allowed drop",
    ),
    pytest.param(
        revision("c1", {p.name: answer(seconds=1.0) for p in PROMPTS}),
        RULES,
        Verdict.FAIL,
        {"latencySeconds": Verdict.FAIL},
        id="ten times slower",
    ),
    pytest.param(
        revision("c1", {p.name: answer(seconds=0.12) for p in PROMPTS}),
        Validation(prompts=PROMPTS, max_latency_ratio=1.1),
        Verdict.PASS,
        {"latencySeconds": Verdict.PASS},
        id="slower within the noise floor",
    ),
    pytest.param(
        revision("c1", same_everywhere(b=Refusal(500, "boom"))),
        RULES,
        Verdict.FAIL,
        {"answers": Verdict.FAIL},
        id="canary fails a prompt stable answers",
    ),
    pytest.param(
        revision("c1", {p.name: Answer(text="the lazy dog", seconds=0.1) for p in PROMPTS}),
        RULES,
        Verdict.PASS,
        {"divergence": Verdict.NO_DATA},
        id="no logprobs: divergence not measured",
    ),
]


@pytest.mark.parametrize(("canary", "rules", "verdict", "checks"), CASES)
def test_compare(canary: RevisionAnswers, rules: Validation, verdict: Verdict, checks: dict[str, Verdict]) -> None:
    outcome = compare(PROMPTS, STABLE, canary, rules)
    assert outcome.verdict == verdict, outcome.message
    assert checks.items() <= verdicts(outcome).items()
    if verdict == Verdict.FAIL:
        assert all(name in outcome.message for name, v in checks.items() if v == Verdict.FAIL)


def test_stable_refusing_a_prompt_blocks_instead_of_deciding() -> None:
    stable = revision("s1", same_everywhere(b=Refusal(400, "prompt too long")))
    outcome = compare(PROMPTS, stable, revision("c1", same_everywhere()), RULES)
    assert outcome.verdict == Verdict.ERROR
    assert "stable cannot answer golden prompt b: 400 prompt too long" in outcome.message


def test_the_worst_prompts_come_first_with_both_answers_truncated() -> None:
    long = "z" * 500
    canary = revision("c1", same_everywhere(a=answer(long, top=UNSURE), b=answer("the lazy cat")))
    outcome = compare(PROMPTS, STABLE, canary, RULES)
    assert [e.name for e in outcome.worst] == ["b", "a", "c"]  # a right answer lost, then a different one
    assert len(outcome.worst[1].canary_answer) == 200
    assert outcome.worst[0].stable_answer == "the lazy dog"


@pytest.mark.parametrize(
    ("stable", "canary", "positions"),
    [
        (("a", "b", "c"), ("a", "b", "c"), 3),
        (("a", "b", "c"), ("a", "x", "y"), 2),  # the first different token's distribution still counts
        (("a",), ("x", "y"), 1),
    ],
)
def test_divergence_stops_where_the_answers_part(
    stable: tuple[str, ...], canary: tuple[str, ...], positions: int
) -> None:
    top = (SURE,) * 3
    assert agreeing_positions(Answer("", stable, top), Answer("", canary, top)) == positions


@pytest.mark.parametrize(
    ("text", "expect", "right"),
    [
        ("the lazy dog", {"contains": "dog"}, True),
        ("the lazy cat", {"contains": "dog"}, False),
        ("order 42", {"regex": r"\d+"}, True),
        (' {"a": 1} ', {"validJson": True}, True),
        ("{'a': 1}", {"validJson": True}, False),
        ("plain", {"validJson": False}, True),
        ("dog 7", {"contains": "dog", "regex": "[0-9]"}, True),
        ('{"ok": true}', {"jsonSchema": {"type": "object", "required": ["ok"]}}, True),
        ('{"fine": 1}', {"jsonSchema": {"type": "object", "required": ["ok"]}}, False),
        ("not json", {"jsonSchema": {"type": "object"}}, False),
        ("{}", {"jsonSchema": {"$ref": "https://example.invalid/nowhere.json"}}, False),  # never fetched
    ],
)
def test_expectations(text: str, expect: dict[str, Any], right: bool) -> None:
    assert meets(text, Expectation.model_validate(expect)) is right


def test_golden_set_reads_the_config_map_after_the_inline_prompts() -> None:
    rules = Validation(prompts=[PROMPTS[0]], prompts_from=ConfigMapKey(name="golden"))
    text = "- name: long\n  prompt: a b c\n  maxTokens: 8\n"
    found = golden_set(rules, lambda name, key: text if (name, key) == ("golden", "prompts.json") else "")
    assert [(p.name, p.max_tokens) for p in found] == [("a", 16), ("long", 8)]


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("[{name: x}]", "[0] Value error, a golden prompt needs exactly one of prompt or messages"),
        ("{not: a list}", "Input should be a valid list"),
        ("- name: a\n  prompt: again", "names repeat: ['a']"),
        ("[: bad", "is not JSON or YAML"),
        (json.dumps([{"name": "x", "prompt": "p", "maxTokens": 0}]), "[0.maxTokens]"),
    ],
)
def test_a_bad_golden_config_map_is_refused_with_where(text: str, error: str) -> None:
    rules = Validation(prompts=[PROMPTS[0]], prompts_from=ConfigMapKey(name="golden"))
    with pytest.raises(ValueError, match=r"ConfigMap golden key prompts\.json|names repeat") as raised:
        golden_set(rules, lambda _n, _k: text)
    assert error in str(raised.value)


def test_a_missing_config_map_says_so() -> None:
    def missing(name: str, key: str) -> str:
        raise LookupError(f"ConfigMap ns/{name} not found")

    with pytest.raises(LookupError, match="ConfigMap ns/golden not found"):
        golden_set(Validation(prompts_from=ConfigMapKey(name="golden")), missing)


def test_requests_are_greedy_and_ask_for_the_logprobs_compared() -> None:
    path, body = request_of(PROMPTS[2], "m")
    assert path == "/v1/chat/completions"
    assert (body["temperature"], body["logprobs"], body["top_logprobs"]) == (0, True, 5)
    path, body = request_of(PROMPTS[0], "m")
    assert (path, body["prompt"], body["logprobs"]) == ("/v1/completions", "hello", 5)


# ---- against real runtimes -------------------------------------------------------------------------
LONG = " ".join(CORPUS)  # well past FAR_POSITION tokens
REAL_PROMPTS = [
    GoldenPrompt(name="short-1", prompt="hello world", max_tokens=8),
    GoldenPrompt(name="short-2", prompt="the quick brown", max_tokens=8),
    GoldenPrompt(name="chat", messages=[ChatMessage(role="user", content="how are you")], max_tokens=8),
    GoldenPrompt(name="long", prompt=LONG, max_tokens=8),
]


@pytest.fixture(scope="module")
def variants(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    import torch

    from model_runtime.model import Placement, load
    from model_runtime.tinymodel import build

    root: Path = tmp_path_factory.mktemp("golden")
    return {
        variant: load(str(build(root / variant, variant=variant)), "text-generation", Placement("cpu", torch.float32))
        for variant in ("none", "swapped-tokenizer", "permuted-far-positions")
    }


async def judged(variants: dict[str, Any], canary: str) -> Any:
    rules = Validation(prompts=REAL_PROMPTS)
    async with (
        running_app(variants["none"], revision="s1") as (stable_client, stable_plane),
        running_app(variants[canary], revision="c1") as (canary_client, _),
    ):
        outcome = await validate(
            rules,
            REAL_PROMPTS,
            ("s1", str(stable_client.make_url("")).rstrip("/")),
            ("c1", str(canary_client.make_url("")).rstrip("/")),
        )
        metrics = await (await stable_client.get("/metrics")).text()
    counted = sample(metrics, REQUESTS_TOTAL, endpoint="completions", code="200", **{SOURCE_LABEL: SOURCE_VALIDATION})
    assert counted == 3  # the golden set is counted apart from user traffic
    assert stable_plane is not None
    return outcome


async def test_the_same_model_passes(variants: dict[str, Any]) -> None:
    outcome = await judged(variants, "none")
    assert outcome.verdict == Verdict.PASS, outcome.message
    assert verdicts(outcome)["tokenizer"] == Verdict.PASS
    assert verdicts(outcome)["tokenIds"] == Verdict.PASS
    assert {e.divergence for e in outcome.worst} == {0.0}
    assert all(e.exact_match for e in outcome.worst)


async def test_a_swapped_tokenizer_of_the_same_size_fails_on_its_fingerprint_and_its_answers(
    variants: dict[str, Any],
) -> None:
    outcome = await judged(variants, "swapped-tokenizer")
    assert outcome.verdict == Verdict.FAIL
    assert outcome.tokenizer_changed
    checks = verdicts(outcome)
    assert checks["tokenizer"] == Verdict.FAIL
    assert checks["tokenIds"] == Verdict.FAIL
    assert checks["exactMatch"] == Verdict.FAIL  # fast, no errors, and wrong


async def test_permuted_far_positions_are_caught_by_the_long_prompt_alone(variants: dict[str, Any]) -> None:
    outcome = await judged(variants, "permuted-far-positions")
    assert outcome.verdict == Verdict.FAIL, outcome.message
    checks = verdicts(outcome)
    assert (checks["tokenizer"], checks["tokenIds"], checks["exactMatch"], checks["divergence"]) == (
        Verdict.PASS,
        Verdict.PASS,
        Verdict.PASS,
        Verdict.FAIL,
    )
    worst = outcome.worst[0]
    assert worst.name == "long"
    assert not worst.exact_match
    others = [e for e in outcome.worst if e.name != "long"]
    assert all(e.exact_match and e.divergence == 0.0 for e in others)


async def test_an_unreachable_stable_blocks_the_gate(variants: dict[str, Any]) -> None:
    async with running_app(variants["none"], revision="c1") as (canary_client, _):
        outcome = await validate(
            Validation(prompts=REAL_PROMPTS, timeout="5s"),
            REAL_PROMPTS,
            ("s1", f"http://127.0.0.1:{free_port()}"),
            ("c1", str(canary_client.make_url("")).rstrip("/")),
        )
    assert outcome.verdict == Verdict.ERROR
    assert "s1 at http://127.0.0.1:" in outcome.message
    assert "unreachable" in outcome.message


async def test_a_canary_slower_than_the_timeout_fails_where_stable_answered(variants: dict[str, Any]) -> None:
    rules = Validation(prompts=REAL_PROMPTS, timeout="2s")
    async with (
        running_app(variants["none"], revision="s1") as (stable_client, _),
        running_app(variants["none"], revision="c1", faults_enabled=True, fault_latency_seconds=5) as (
            canary_client,
            _,
        ),
    ):
        outcome = await validate(
            rules,
            REAL_PROMPTS,
            ("s1", str(stable_client.make_url("")).rstrip("/")),
            ("c1", str(canary_client.make_url("")).rstrip("/")),
        )
        swapped = await validate(
            rules,
            REAL_PROMPTS,
            ("c1", str(canary_client.make_url("")).rstrip("/")),
            ("s1", str(stable_client.make_url("")).rstrip("/")),
        )
    assert outcome.verdict == Verdict.FAIL
    assert "canary did not answer the golden set within timeout (2s)" in outcome.message
    assert swapped.verdict == Verdict.ERROR  # the slow one as stable: nothing to compare with, no decision
    assert "stable did not answer" in swapped.message
