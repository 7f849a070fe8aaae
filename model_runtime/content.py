"""Which kinds of content issue a finished choice has, as the content SLI counts them: each kind on its
own (a choice cut by max_tokens may also be garbled), so one kind never hides another."""

from __future__ import annotations

import json

from .contract import OUTCOME_EMPTY, OUTCOME_INVALID_JSON, OUTCOME_TRUNCATED, OUTCOME_UNDECODABLE

REPLACEMENT_CHARACTER = "\ufffd"


def content_issues(text: str, finish_reason: str, json_asked: bool) -> tuple[str, ...]:
    cut = finish_reason == "length"
    if cut:
        text = text.rstrip(REPLACEMENT_CHARACTER)  # cut inside a multi-byte character: truncated, not garbled
    issues = []
    if not text.strip():
        issues.append(OUTCOME_EMPTY)  # nothing to decode or parse: the plainer story alone
    else:
        if REPLACEMENT_CHARACTER in text:
            issues.append(OUTCOME_UNDECODABLE)
        if json_asked:
            try:
                json.loads(text)
            except ValueError:
                issues.append(OUTCOME_INVALID_JSON)
    if cut:
        issues.append(OUTCOME_TRUNCATED)
    return tuple(issues)
