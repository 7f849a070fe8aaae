"""The runtime through the official `openai` SDK, at its defaults, as users call it."""

from __future__ import annotations

import json
import struct
from collections.abc import AsyncIterator
from typing import Any

import jsonschema
import openai
import pytest

from tests.runtime_helpers import running_app


@pytest.fixture
async def sdk(tiny_loaded: Any) -> AsyncIterator[openai.AsyncOpenAI]:
    async with running_app(tiny_loaded, api_key="sekrit", max_concurrent_requests=2) as (client, _):
        base = str(client.make_url("/v1"))
        yield openai.AsyncOpenAI(base_url=base, api_key="sekrit", max_retries=0)


async def test_completions_and_chat(sdk: openai.AsyncOpenAI) -> None:
    completion = await sdk.completions.create(model="model", prompt="hello world", max_tokens=5, temperature=0)
    assert completion.choices[0].finish_reason == "length"
    assert completion.usage is not None
    assert completion.usage.completion_tokens == 5
    chat = await sdk.chat.completions.create(
        model="model", messages=[{"role": "user", "content": "hi"}], max_completion_tokens=4, temperature=0
    )
    assert chat.choices[0].message.role == "assistant"
    assert chat.usage is not None
    assert chat.usage.completion_tokens == 4


async def test_frameworks_defaults_and_content_parts_are_accepted(sdk: openai.AsyncOpenAI) -> None:
    chat = await sdk.chat.completions.create(
        model="model",
        messages=[{"role": "user", "content": [{"type": "text", "text": "hi"}, {"type": "text", "text": "there"}]}],
        max_tokens=3,
        temperature=0,
        presence_penalty=0,
        frequency_penalty=0,
        logit_bias={},
        response_format={"type": "text"},
        user="someone",
        extra_body={"top_k": -1, "min_p": 0.0, "repetition_penalty": 1.0, "some_future_field": True},
    )
    assert chat.usage is not None
    assert chat.usage.completion_tokens == 3


@pytest.mark.parametrize("endpoint", ["completions", "chat"])
async def test_streaming_with_usage_ends_with_a_usage_only_chunk(sdk: openai.AsyncOpenAI, endpoint: str) -> None:
    if endpoint == "completions":
        stream: Any = await sdk.completions.create(
            model="model", prompt="hello", max_tokens=4, temperature=0, stream=True,
            stream_options={"include_usage": True},
        )  # fmt: skip
    else:
        stream = await sdk.chat.completions.create(
            model="model", messages=[{"role": "user", "content": "hi"}], max_tokens=4, temperature=0, stream=True,
            stream_options={"include_usage": True},
        )  # fmt: skip
    chunks = [chunk async for chunk in stream]
    *body, last = chunks
    assert last.choices == []
    assert last.usage is not None
    assert last.usage.completion_tokens == 4
    assert all(chunk.usage is None for chunk in body)
    assert body[-1].choices[0].finish_reason == "length"


async def test_embeddings_with_the_sdk_defaults_are_base64(tiny_loaded: Any, tmp_path: Any) -> None:
    import torch

    from model_runtime.model import Placement, load
    from model_runtime.tinymodel import build

    encoder = load(str(build(tmp_path / "tiny")), "embeddings", Placement("cpu", torch.float32))
    async with running_app(encoder, task="embeddings") as (client, _):
        sdk = openai.AsyncOpenAI(base_url=str(client.make_url("/v1")), api_key="none", max_retries=0)
        default = await sdk.embeddings.create(model="model", input="hi")  # the SDK asks for base64
        floats = await sdk.embeddings.create(model="model", input="hi", encoding_format="float")
        raw = await client.post("/v1/embeddings", json={"model": "model", "input": "hi", "encoding_format": "base64"})
        encoded = (await raw.json())["data"][0]["embedding"]
    assert default.data[0].embedding == pytest.approx(floats.data[0].embedding, abs=1e-6)
    assert len(default.data[0].embedding) == len(floats.data[0].embedding) > 0
    import base64

    decoded = struct.unpack(f"<{len(floats.data[0].embedding)}f", base64.b64decode(encoded))
    assert list(decoded) == pytest.approx(floats.data[0].embedding, abs=1e-6)


async def test_errors_map_to_the_sdks_exceptions(sdk: openai.AsyncOpenAI, tiny_loaded: Any) -> None:
    with pytest.raises(openai.BadRequestError) as bad:
        await sdk.completions.create(model="model", prompt="x", max_tokens=0)
    assert "max_tokens" in str(bad.value)
    with pytest.raises(openai.NotFoundError):
        await sdk.completions.create(model="gpt-9", prompt="x", max_tokens=1)
    wrong_key = openai.AsyncOpenAI(base_url=str(sdk.base_url), api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        await wrong_key.completions.create(model="model", prompt="x", max_tokens=1)


async def test_a_full_queue_is_a_rate_limit_with_retry_after(sdk: openai.AsyncOpenAI) -> None:
    import asyncio

    def slow() -> Any:
        return sdk.completions.create(model="model", prompt="hello", max_tokens=200, temperature=0)

    results = await asyncio.gather(slow(), slow(), slow(), return_exceptions=True)
    limited = [r for r in results if isinstance(r, openai.RateLimitError)]
    assert limited, results
    assert limited[0].response.headers["retry-after"] == "1"


PERSON = {
    "type": "object",
    "properties": {"name": {"type": "string", "maxLength": 12}, "age": {"type": "integer", "minimum": 0}},
    "required": ["name", "age"],
    "additionalProperties": False,
}


async def test_json_schema_mode_answers_match_the_schema(sdk: openai.AsyncOpenAI) -> None:
    chat = await sdk.chat.completions.create(
        model="model",
        messages=[{"role": "user", "content": "a person"}],
        response_format={"type": "json_schema", "json_schema": {"name": "person", "schema": PERSON}},
        max_completion_tokens=120,
        temperature=1.0,
        seed=3,
        n=4,
    )
    finished = [c for c in chat.choices if c.finish_reason == "stop"]
    assert finished, [c.finish_reason for c in chat.choices]
    for choice in finished:
        assert choice.message.content is not None
        jsonschema.validate(json.loads(choice.message.content), PERSON)


async def test_json_object_mode_streams_a_json_object(sdk: openai.AsyncOpenAI) -> None:
    stream = await sdk.completions.create(
        model="model",
        prompt="{",
        extra_body={"response_format": {"type": "json_object"}},  # vLLM's extension to completions
        max_tokens=64,
        temperature=1.0,
        seed=11,
        stream=True,
    )
    text, reasons = "", []
    async for chunk in stream:
        text += chunk.choices[0].text
        reasons.append(chunk.choices[0].finish_reason)
    assert text.lstrip().startswith("{")
    if reasons[-1] == "stop":
        assert isinstance(json.loads(text), dict)
