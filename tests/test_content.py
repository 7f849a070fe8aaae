"""Which kinds of content issue a finished choice is counted with, for the content SLI: each on its own."""

from __future__ import annotations

import pytest

from model_runtime.content import content_issues


@pytest.mark.parametrize(
    ("text", "finish_reason", "json_asked", "issues"),
    [
        ("Paris.", "stop", False, ()),
        ("", "stop", False, ("empty",)),
        (" \n\t", "stop", False, ("empty",)),
        ("", "length", True, ("empty", "truncated")),  # nothing to decode or parse: empty, and cut
        ("caf\ufffd au lait", "stop", False, ("undecodable",)),
        ("a story that goes on", "length", False, ("truncated",)),
        ("caf\ufffd", "length", False, ("truncated",)),  # cut inside a multi-byte character, not garbled
        ("\ufffd garbled and cut", "length", False, ("undecodable", "truncated")),  # neither hides the other
        ('{"city": "Paris"}', "stop", True, ()),
        ('{"city": "Par', "length", True, ("invalid_json", "truncated")),
        ("Paris", "stop", True, ("invalid_json",)),
        ('{"city": "Paris"}', "length", True, ("truncated",)),  # parses, but was cut: the schema may want more
        ("not json", "stop", False, ()),  # JSON was not asked for
    ],
)
def test_content_issues(text: str, finish_reason: str, json_asked: bool, issues: tuple[str, ...]) -> None:
    assert content_issues(text, finish_reason, json_asked) == issues
