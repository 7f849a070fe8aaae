"""The CLI's tables and its refusals, from status documents as the operator writes them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from model_operator.cli import detail, history_table, refusal, status_table
from tests.test_health import scenario

NOW = datetime(2026, 1, 1, 0, 10, tzinfo=UTC)


def item(name: str, status: dict[str, Any], spec: dict[str, Any] | None = None) -> dict[str, Any]:
    created = (NOW - timedelta(minutes=7)).isoformat().replace("+00:00", "Z")
    return {
        "metadata": {"name": name, "namespace": "team", "creationTimestamp": created},
        "spec": spec or {"rollout": {"steps": [{"weight": 10}, {"weight": 50}]}},
        "status": status,
    }


def test_status_table_lines_up_and_says_the_step() -> None:
    canary = item("chat", scenario("canary-step")[1])
    healthy = item("embed", scenario("healthy")[1])
    text = status_table([canary, healthy], NOW, all_namespaces=True)
    lines = text.splitlines()
    assert lines[0].split() == [
        "NAMESPACE",
        "NAME",
        "PHASE",
        "STABLE",
        "CANARY",
        "WEIGHT",
        "STEP",
        "ANALYSIS",
        "AGE",
        "MESSAGE",
    ]
    assert lines[1].split()[:8] == ["team", "chat", "Progressing", "s1", "c1", "10%", "1/2", "Pass"]
    assert lines[2].split()[:7] == ["team", "embed", "Healthy", "s1", "-", "0%", "-"]
    assert "7m" in lines[1]
    assert lines[0].index("PHASE") == lines[1].index("Progressing") == lines[2].index("Healthy")


def test_detail_shows_the_slis_and_conditions() -> None:
    text = detail(item("chat", scenario("canary-step")[1]), NOW)
    assert "canary c1 at 10%" in text
    assert "SLI" in text
    assert "Conditions:" in text
    rolled = detail(item("chat", scenario("rolled-back")[1]), NOW)
    assert "modelship retry chat" in rolled


def test_detail_shows_the_validation_and_its_worst_prompts() -> None:
    status = scenario("validation-failed")[1]
    status["validation"]["worstPrompts"] = [
        {
            "name": "long-document",
            "divergence": 0.41,
            "exactMatch": False,
            "canaryAnswer": "x " * 50,
            "stableAnswer": "ok",
        }
    ]
    text = detail(item("chat", status), NOW)
    assert "Validation of c1 against s1" in text
    assert "CHECK" in text
    assert "divergence" in text
    line = next(line for line in text.splitlines() if "long-document" in line)
    assert line.split()[:3] == ["long-document", "0.41", "no"]
    assert "…" in line  # a long answer is clipped


def test_history_newest_first() -> None:
    text = history_table(item("chat", scenario("rolled-back")[1]), NOW)
    rows = text.splitlines()
    assert rows[1].split()[:2] == ["c1", "RolledBack"]
    assert rows[2].split()[:2] == ["s1", "Deployed"]
    assert history_table(item("x", {}), NOW) == "x has no history yet"


@pytest.mark.parametrize(
    ("action", "phase_name", "words"),
    [
        ("promote", "healthy", "no canary in progress"),
        ("abort", "healthy", "no canary in progress"),
        ("retry", "healthy", "nothing to retry"),
        ("pause", "paused-by-user", "already paused"),
        ("resume", "canary-step", "not paused"),
        ("promote", "canary-step", None),
        ("abort", "canary-step", None),
        ("retry", "rolled-back", None),
        ("resume", "paused-by-user", None),
    ],
)
def test_refusals(action: str, phase_name: str, words: str | None) -> None:
    problem = refusal(action, item("chat", scenario(phase_name)[1]))
    if words is None:
        assert problem is None
    else:
        assert problem is not None
        assert words in problem
