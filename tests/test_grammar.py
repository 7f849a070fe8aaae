"""JSON mode's grammars: what a constrained sequence may say next."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch

from model_runtime.grammar import Constraint, GrammarError, Grammars


def allowed_after(loaded: Any, constraint: Constraint, text: str) -> set[str]:
    for token in loaded.tokenizer.encode(text):
        assert constraint.advance(token), text
    logits = torch.zeros(loaded.vocab_size)
    constraint.mask(logits)
    return {loaded.tokenizer.decode([i]) for i in range(len(loaded.tokenizer)) if not math.isinf(float(logits[i]))}


@pytest.mark.parametrize("schema", [{"type": "string"}, {"type": "string", "maxLength": 4}])
def test_strings_refuse_raw_control_characters(tiny_loaded: Any, schema: dict[str, Any]) -> None:
    # xgrammar writes length-bounded strings without the control-character exclusion; ours restores it.
    allowed = allowed_after(tiny_loaded, Constraint(Grammars(tiny_loaded).json_schema(schema)), '"')
    assert "a" in allowed
    assert not {chr(code) for code in range(32)} & allowed


def test_json_object_opens_an_object(tiny_loaded: Any) -> None:
    assert allowed_after(tiny_loaded, Constraint(Grammars(tiny_loaded).json_object()), "") <= {"{", "[", " ", "\n"}


def test_an_integer_goes_on_with_digits_or_ends(tiny_loaded: Any) -> None:
    allowed = allowed_after(tiny_loaded, Constraint(Grammars(tiny_loaded).json_schema({"type": "integer"})), "42")
    assert "7" in allowed
    assert not {"a", '"', "{", "."} & allowed


@pytest.mark.parametrize("schema", [{"type": "nope"}, {"$ref": "#/missing"}])
def test_unusable_schemas_are_refused_with_the_reason(tiny_loaded: Any, schema: dict[str, Any]) -> None:
    with pytest.raises(GrammarError, match="the JSON schema cannot be used") as caught:
        Grammars(tiny_loaded).json_schema(schema)
    assert ".cc:" not in str(caught.value)


def test_a_huge_schema_is_refused(tiny_loaded: Any) -> None:
    schema = {"type": "object", "properties": {f"p{i}": {"type": "string"} for i in range(5000)}}
    with pytest.raises(GrammarError, match="the limit is"):
        Grammars(tiny_loaded).json_schema(schema)
