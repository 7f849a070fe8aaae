"""Tokenizer and config fingerprints: equal for revisions that tokenize alike, different for a tokenizer
swapped for another of the same vocabulary size, and exported where the operator reads them."""

from __future__ import annotations

import copy
import json
from typing import Any

from tokenizers import Tokenizer

from model_runtime.fingerprint import fingerprints
from tests.metrics_helpers import sample
from tests.runtime_helpers import running_app


def test_the_same_tokenizer_and_config_give_the_same_fingerprints(tiny_loaded: Any) -> None:
    config = tiny_loaded.model.config
    again = copy.deepcopy(tiny_loaded.tokenizer)
    assert fingerprints(tiny_loaded.tokenizer, config) == fingerprints(again, config)


def test_a_tokenizer_with_permuted_ids_of_the_same_size_changes_the_fingerprint(tiny_loaded: Any) -> None:
    """Same vocabulary size, same tokens, two ids swapped: fast, no errors, and every answer wrong."""
    tokenizer = tiny_loaded.tokenizer
    swapped = copy.deepcopy(tokenizer)
    pipeline = json.loads(swapped.backend_tokenizer.to_str())
    vocab = pipeline["model"]["vocab"]
    a, b = sorted(vocab, key=vocab.get)[100:102]
    vocab[a], vocab[b] = vocab[b], vocab[a]
    swapped._tokenizer = Tokenizer.from_str(json.dumps(pipeline))
    assert len(swapped) == len(tokenizer)
    config = tiny_loaded.model.config
    assert fingerprints(swapped, config).tokenizer != fingerprints(tokenizer, config).tokenizer
    assert fingerprints(swapped, config).config == fingerprints(tokenizer, config).config


def test_a_changed_chat_template_or_config_changes_its_fingerprint(tiny_loaded: Any) -> None:
    tokenizer, config = tiny_loaded.tokenizer, tiny_loaded.model.config
    templated = copy.deepcopy(tokenizer)
    templated.chat_template = "{{ messages[0]['content'] }}"
    assert fingerprints(templated, config).tokenizer != fingerprints(tokenizer, config).tokenizer
    longer = copy.deepcopy(config)
    longer.n_positions = config.n_positions * 2
    assert fingerprints(tokenizer, longer).config != fingerprints(tokenizer, config).config


async def test_the_fingerprints_are_in_build_info_and_v1_models(tiny_loaded: Any) -> None:
    expected = fingerprints(tiny_loaded.tokenizer, tiny_loaded.model.config)
    async with running_app(tiny_loaded) as (client, _):
        model = (await (await client.get("/v1/models")).json())["data"][0]
        text = await (await client.get("/metrics")).text()
    assert model["tokenizer_fingerprint"] == expected.tokenizer
    assert model["config_fingerprint"] == expected.config
    labels = {"tokenizer_fingerprint": expected.tokenizer, "config_fingerprint": expected.config}
    assert sample(text, "modelship_build_info", revision="r1", **labels) == 1.0
