"""No input alone gets a 5xx, and every answer is what the document says: schemathesis against the
runtime's own /openapi.json, and a property-based
test (hypothesis) of arbitrary and mutated bodies, both on a runtime process serving the tiny model.
Bounded in examples; loopback only."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance, status_code_conformance

from model_runtime.openapi import document
from tests.process_helpers import HOST, free_port, start, wait_ready

SCHEMA = schemathesis.openapi.from_dict(document(with_api_key=False))
GOOD: dict[str, dict[str, Any]] = {
    "/v1/completions": {"model": "model", "prompt": "hello", "max_tokens": 2},
    "/v1/chat/completions": {"model": "model", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2},
    "/v1/embeddings": {"model": "model", "input": "hi"},
    "/tokenize": {"model": "model", "prompt": "hi"},
}


@pytest.fixture(scope="module")
def runtime(tiny_model_dir: Path) -> Iterator[str]:
    port = free_port()
    process = start(tiny_model_dir, port, "--max-new-tokens", "16", "--request-timeout-seconds", "20")
    base = f"http://{HOST}:{port}"
    try:
        wait_ready(base, process)
        yield base
    finally:
        process.terminate()
        process.wait(timeout=30)


@SCHEMA.parametrize()
@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
def test_schemathesis_finds_no_server_error_and_answers_match_the_document(case: Any, runtime: str) -> None:
    response = case.call(base_url=runtime, timeout=30)
    # No 5xx from input alone, only documented status codes, and every body (answers, errors and each
    # streamed chunk) as the document describes it.
    case.validate_response(response, checks=(not_a_server_error, status_code_conformance, response_schema_conformance))


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=12,
)


def _post(url: str, body: bytes) -> tuple[int, Any]:
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def _mutations() -> st.SearchStrategy[tuple[str, bytes]]:
    """A good body with one field replaced by anything, or removed, or raw bytes of no JSON at all."""
    path = st.sampled_from(sorted(GOOD))

    def mutate(draw: st.DrawFn) -> tuple[str, bytes]:
        chosen = draw(path)
        body = dict(GOOD[chosen])
        key = draw(st.sampled_from([*body, "temperature", "top_p", "seed", "stop", "logprobs", "stream", "n"]))
        kind = draw(st.sampled_from(["replace", "delete", "raw"]))
        if kind == "raw":
            return chosen, draw(st.binary(max_size=64))
        if kind == "delete":
            body.pop(key, None)
        else:
            body[key] = draw(JSON)
        return chosen, json.dumps(body).encode()

    return st.composite(mutate)()


@given(target=_mutations())
@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
def test_a_malformed_body_gets_a_4xx_in_the_one_error_shape(runtime: str, target: tuple[str, bytes]) -> None:
    path, body = target
    status, raw = _post(runtime + path, body)
    assert status < 500, (path, body, raw)
    if status >= 400:
        error = json.loads(raw)["error"]
        assert set(error) == {"message", "type", "param", "code"}
        assert error["message"]
