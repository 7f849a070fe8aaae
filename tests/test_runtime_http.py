"""The runtime's HTTP API: every kind of bad input gets the one JSON error shape and the right code, and
never disturbs good requests running beside it."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from typing import Any

import pytest

from model_runtime.contract import CONTENT_ISSUES, MIRROR_HEADER, OUTCOME_ALL
from tests.metrics_helpers import sample
from tests.runtime_helpers import running_app

GOOD = {"model": "model", "prompt": "hello world", "max_tokens": 6, "temperature": 0}
CHAT = {"model": "model", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4, "temperature": 0}

BAD_REQUESTS = [
    # (id, path, raw body, expected status, words in the message)
    ("malformed-json", "/v1/completions", b'{"model": "model", "prompt": ', 400, "not valid JSON"),
    ("empty-body", "/v1/completions", b"", 400, "body is empty"),
    ("not-an-object", "/v1/completions", b"[1, 2]", 422, "JSON object"),
    ("binary-body", "/v1/completions", b"\xff\xfe\x00", 400, "not UTF-8"),
    ("lone-surrogate", "/v1/completions", b'{"model": "model", "prompt": "\\ud800"}', 400, "lone surrogate"),
    (
        "chat-lone-surrogate",
        "/v1/chat/completions",
        b'{"messages": [{"role": "user", "content": "\\udfff"}]}',
        400,
        "lone surrogate",
    ),
    ("deep-json", "/v1/completions", b"[" * 100_000 + b"]" * 100_000, 400, "too deeply"),
    (
        "huge-integer",
        "/v1/completions",
        b'{"model": "model", "prompt": "x", "seed": ' + b"9" * 5000 + b"}",
        400,
        "digits",
    ),
    ("seed-over-uint64", "/v1/completions", {**GOOD, "temperature": 1, "seed": 2**64}, 400, "seed"),
    ("seed-below-int64", "/v1/completions", {**GOOD, "temperature": 1, "seed": -(2**63) - 1}, 400, "seed"),
    ("penalty-out-of-range", "/v1/completions", {**GOOD, "presence_penalty": 2.5}, 400, "presence_penalty"),
    ("repetition-penalty-zero", "/v1/completions", {**GOOD, "repetition_penalty": 0}, 400, "repetition_penalty"),
    (
        "repetition-penalty-subnormal",
        "/v1/completions",
        {**GOOD, "temperature": 1, "repetition_penalty": 5e-324},
        400,
        "repetition_penalty",
    ),
    ("top-k-below-minus-one", "/v1/completions", {**GOOD, "top_k": -2}, 400, "top_k"),
    ("min-p-over-one", "/v1/completions", {**GOOD, "min_p": 1.5}, 400, "min_p"),
    ("min-tokens-over-max", "/v1/completions", {**GOOD, "min_tokens": 9, "max_tokens": 4}, 400, "min_tokens (9)"),
    ("bias-not-a-token", "/v1/completions", {**GOOD, "logit_bias": {"hello": 1}}, 400, "token ids below"),
    ("bias-past-vocab", "/v1/completions", {**GOOD, "logit_bias": {"99999999": 1}}, 400, "token ids below"),
    ("bias-too-big", "/v1/completions", {**GOOD, "logit_bias": {"5": 101}}, 400, "logit_bias"),
    ("stop-token-past-vocab", "/v1/completions", {**GOOD, "stop_token_ids": [10**6]}, 400, "stop_token_ids"),
    ("nan-is-not-json", "/v1/completions", b'{"model": "model", "prompt": "x", "temperature": NaN}', 400, "NaN"),
    (
        "json-schema-missing",
        "/v1/chat/completions",
        {**CHAT, "response_format": {"type": "json_schema"}},
        400,
        "json_schema is required",
    ),
    (
        "json-schema-unusable",
        "/v1/chat/completions",
        {**CHAT, "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "nope"}}}},
        400,
        "the JSON schema cannot be used",
    ),
    (
        "json-schema-not-an-object",
        "/v1/completions",
        {**GOOD, "response_format": {"type": "json_schema", "json_schema": {"schema": 5}}},
        422,
        "schema",
    ),
    ("prompt-wrong-type", "/v1/completions", {**GOOD, "prompt": 5}, 422, "prompt"),
    ("max-tokens-string", "/v1/completions", {**GOOD, "max_tokens": "6"}, 422, "max_tokens"),
    ("max-tokens-fractional", "/v1/completions", {**GOOD, "max_tokens": 2.5}, 422, "max_tokens"),
    ("n-true", "/v1/completions", {**GOOD, "n": True}, 422, "not a boolean"),
    ("temperature-string", "/v1/completions", {**GOOD, "temperature": "hot"}, 422, "temperature"),
    ("missing-prompt", "/v1/completions", {"model": "model"}, 422, "prompt: Field required"),
    ("missing-model", "/v1/completions", {"prompt": "x"}, 422, "model: Field required"),
    ("ignore-eos-string", "/v1/completions", {**GOOD, "ignore_eos": "yes"}, 422, "ignore_eos"),
    ("empty-prompt", "/v1/completions", {**GOOD, "prompt": ""}, 400, "must not be empty"),
    ("max-tokens-over-cap", "/v1/completions", {**GOOD, "max_tokens": 100_000}, 400, "the limit is"),
    ("max-tokens-zero", "/v1/completions", {**GOOD, "max_tokens": 0}, 400, "max_tokens"),
    ("temperature-too-high", "/v1/completions", {**GOOD, "temperature": 9}, 400, "temperature"),
    ("top-p-zero", "/v1/completions", {**GOOD, "top_p": 0}, 400, "top_p"),
    ("too-many-stops", "/v1/completions", {**GOOD, "stop": ["a", "b", "c", "d", "e"]}, 400, "stop"),
    ("empty-stop", "/v1/completions", {**GOOD, "stop": [""]}, 400, "stop"),
    ("logprobs-too-many", "/v1/completions", {**GOOD, "logprobs": 50}, 400, "logprobs"),
    ("n-over-limit", "/v1/completions", {**GOOD, "n": 17}, 400, "n"),
    ("choices-over-limit", "/v1/completions", {**GOOD, "prompt": ["a"] * 5, "n": 4}, 400, "20 choices"),
    ("prompt-empty-list", "/v1/completions", {**GOOD, "prompt": []}, 400, "must not be empty"),
    ("prompt-token-past-vocab", "/v1/completions", {**GOOD, "prompt": [10**7]}, 400, "token ids must be below"),
    ("prompt-mixed-list", "/v1/completions", {**GOOD, "prompt": ["a", 5]}, 422, "prompt"),
    ("prompt-too-long", "/v1/completions", {**GOOD, "prompt": "hello world " * 400}, 400, "tokens; the limit"),
    ("unknown-model", "/v1/completions", {**GOOD, "model": "gpt-9"}, 404, "not served here"),
    ("chat-no-messages", "/v1/chat/completions", {**CHAT, "messages": []}, 400, "messages"),
    ("chat-bad-role", "/v1/chat/completions", {**CHAT, "messages": [{"role": "robot", "content": "x"}]}, 400, "role"),
    ("chat-content-missing", "/v1/chat/completions", {**CHAT, "messages": [{"role": "user"}]}, 422, "content"),
    ("chat-all-empty", "/v1/chat/completions", {**CHAT, "messages": [{"role": "user", "content": ""}]}, 400, "empty"),
    ("embeddings-on-generator", "/v1/embeddings", {"model": "model", "input": "x"}, 400, "does not serve"),
    ("unknown-endpoint", "/v1/edits", {}, 404, "no such endpoint"),
    (
        "tokenize-both",
        "/tokenize",
        {"prompt": "x", "messages": CHAT["messages"]},
        400,
        "exactly one of prompt or messages",
    ),
    ("tokenize-neither", "/tokenize", {"model": "model"}, 400, "exactly one of prompt or messages"),
    ("tokenize-other-model", "/tokenize", {"model": "gpt-4", "prompt": "x"}, 404, "not served here"),
    ("tokenize-bad-role", "/tokenize", {"messages": [{"role": "robot", "content": "x"}]}, 400, "role"),
]


@pytest.mark.parametrize(
    ("path", "body", "status", "words"), [c[1:] for c in BAD_REQUESTS], ids=[c[0] for c in BAD_REQUESTS]
)
async def test_bad_request(tiny_loaded: Any, path: str, body: Any, status: int, words: str) -> None:
    async with running_app(tiny_loaded, max_input_tokens=256) as (client, _):
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        response = await client.post(path, data=raw)
        document = await response.json()
        assert response.status == status, document
        assert set(document) == {"error"}
        assert set(document["error"]) == {"message", "type", "param", "code"}
        assert words in document["error"]["message"], document
        # The server is still fine afterwards.
        assert (await client.post("/v1/completions", json=GOOD)).status == 200


async def test_whole_floats_are_integers(tiny_loaded: Any) -> None:
    """JSON Schema's integer (and OpenAI's, and vLLM's) includes 2.0: generated clients send such values."""
    body = {**GOOD, "max_tokens": 2.0, "n": 1.0, "seed": 7.0, "top_k": -1.0, "min_tokens": 0.0, "logprobs": 1.0}
    async with running_app(tiny_loaded) as (client, _):
        response = await client.post("/v1/completions", json=body)
        document = await response.json()
        assert response.status == 200, document
        assert document["usage"]["completion_tokens"] <= 2
        assert len(document["choices"][0]["logprobs"]["top_logprobs"][0]) == 1


async def test_wrong_method_is_405(tiny_loaded: Any) -> None:
    async with running_app(tiny_loaded) as (client, _):
        response = await client.get("/v1/completions")
        assert response.status == 405
        assert (await response.json())["error"]["type"] == "method_not_allowed"


async def test_body_over_the_byte_limit_is_413(tiny_loaded: Any) -> None:
    async with running_app(tiny_loaded, max_body_bytes=2048) as (client, _):
        response = await client.post("/v1/completions", data=json.dumps({**GOOD, "prompt": "x" * 5000}))
        assert response.status == 413
        assert (await response.json())["error"]["type"] == "request_too_large"


async def test_keep_last_truncation_serves_long_prompts(tiny_loaded: Any) -> None:
    async with running_app(tiny_loaded, max_input_tokens=16, truncation="keep-last") as (client, _):
        response = await client.post("/v1/completions", json={**GOOD, "prompt": "hello world " * 50})
        body = await response.json()
        assert response.status == 200, body
        assert body["usage"]["prompt_tokens"] == 16


async def test_not_ready_is_503(tiny_loaded: Any) -> None:
    async with running_app(tiny_loaded, ready=False) as (client, _):
        assert (await client.get("/health/ready")).status == 503
        response = await client.post("/v1/completions", json=GOOD)
        assert response.status == 503
        assert (await response.json())["error"]["type"] == "not_ready"
        assert (await client.get("/health/live")).status == 200


async def test_queue_full_is_429_and_nothing_is_lost(tiny_loaded: Any) -> None:
    async with running_app(tiny_loaded, max_concurrent_requests=2) as (client, _):
        slow = {**GOOD, "max_tokens": 200}
        results = await asyncio.gather(*[client.post("/v1/completions", json=slow) for _ in range(6)])
        codes = sorted(r.status for r in results)
        assert codes.count(200) >= 2
        assert set(codes) <= {200, 429}
        assert 429 in codes
        for response in results:
            if response.status == 429:
                assert (await response.json())["error"]["type"] == "queue_full"
            else:
                assert (await response.json())["usage"]["completion_tokens"] == 200


async def test_timeout_is_504_and_the_server_goes_on(tiny_loaded: Any) -> None:
    async with running_app(
        tiny_loaded, request_timeout_seconds=0.3, faults_enabled=True, fault_latency_seconds=0.0
    ) as (client, _):
        # ignore_eos: the answer cannot end early, so 480 decode steps outlast 0.3 s on any machine.
        response = await client.post("/v1/completions", json={**GOOD, "max_tokens": 480, "ignore_eos": True})
        assert response.status == 504
        assert (await response.json())["error"]["type"] == "timeout"
        assert (await client.post("/v1/completions", json=GOOD)).status == 200


async def test_bad_requests_do_not_spoil_their_batch(tiny_loaded: Any) -> None:
    async with running_app(tiny_loaded, max_batch_wait_ms=50) as (client, _):
        alone = await (await client.post("/v1/completions", json=GOOD)).json()
        mixed = [
            GOOD,
            {**GOOD, "prompt": ""},
            GOOD,
            {**GOOD, "max_tokens": "x"},
            {**GOOD, "prompt": 3},
            GOOD,
            {**GOOD, "max_tokens": 10**6},
            GOOD,
        ]
        responses = await asyncio.gather(*[client.post("/v1/completions", json=m) for m in mixed])
        for sent, response in zip(mixed, responses, strict=True):
            body = await response.json()
            if sent is GOOD:
                assert response.status == 200
                assert body["choices"][0]["text"] == alone["choices"][0]["text"]
            else:
                assert response.status in (400, 422)


async def test_api_key(tiny_loaded: Any) -> None:
    async with running_app(tiny_loaded, api_key="sekret") as (client, _):
        assert (await client.post("/v1/completions", json=GOOD)).status == 401
        wrong = await client.post("/v1/completions", json=GOOD, headers={"Authorization": "Bearer nope"})
        assert wrong.status == 401
        right = await client.post("/v1/completions", json=GOOD, headers={"Authorization": "Bearer sekret"})
        assert right.status == 200
        lower = await client.post("/v1/completions", json=GOOD, headers={"Authorization": "bearer sekret"})
        assert lower.status == 200  # the scheme is case-insensitive (RFC 7235)
        assert (await client.get("/v1/models")).status == 401  # every /v1 route, as vLLM
        assert (await client.get("/v1/models", headers={"Authorization": "Bearer sekret"})).status == 200
        assert (await client.post("/tokenize", json={"prompt": "hi"})).status == 401
        assert (await client.get("/health/ready")).status == 200  # probes need no key


@pytest.mark.parametrize(
    ("setup", "status", "retry_after"),
    [({"max_concurrent_requests": 1}, 429, "1"), ({"ready": False}, 503, "5")],
)
async def test_refusals_say_when_to_retry(
    tiny_loaded: Any, setup: dict[str, Any], status: int, retry_after: str
) -> None:
    async with running_app(tiny_loaded, **setup) as (client, dataplane):
        if status == 429:
            dataplane.admission.enter()  # one request in flight: the pod is full
        response = await client.post("/v1/completions", json=GOOD)
    assert response.status == status
    assert response.headers["Retry-After"] == retry_after


async def test_requests_running_counts_what_is_in_flight(tiny_loaded: Any) -> None:
    async with running_app(tiny_loaded) as (client, dataplane):
        dataplane.admission.enter()
        dataplane.admission.enter()
        during = await (await client.get("/metrics")).text()
        dataplane.admission.leave()
        dataplane.admission.leave()
        after = await (await client.get("/metrics")).text()
    assert sample(during, "modelship_requests_running", revision="r1") == 2.0
    assert sample(after, "modelship_requests_running", revision="r1") == 0.0


async def test_injected_errors_are_500_only_when_enabled(tiny_loaded: Any) -> None:
    async with running_app(tiny_loaded, faults_enabled=True, fault_error_rate=1.0) as (client, _):
        response = await client.post("/v1/completions", json=GOOD)
        assert response.status == 500
        assert (await response.json())["error"]["type"] == "injected_fault"


async def test_streaming_and_logprobs(tiny_loaded: Any) -> None:
    async with running_app(tiny_loaded) as (client, _):
        whole = await (await client.post("/v1/completions", json={**GOOD, "logprobs": 3})).json()
        logprobs = whole["choices"][0]["logprobs"]
        assert len(logprobs["tokens"]) == 6
        assert all(len(top) <= 3 for top in logprobs["top_logprobs"])
        assert all(lp <= 0 for lp in logprobs["token_logprobs"])
        response = await client.post("/v1/completions", json={**GOOD, "stream": True})
        assert response.headers["Content-Type"].startswith("text/event-stream")
        events = [line.removeprefix("data: ") for line in (await response.text()).splitlines() if line]
        assert events[-1] == "[DONE]"
        chunks = [json.loads(e) for e in events[:-1]]
        assert "".join(c["choices"][0]["text"] for c in chunks) == whole["choices"][0]["text"]
        assert chunks[-1]["choices"][0]["finish_reason"] == "length"


async def test_chat_uses_the_template(tiny_loaded: Any) -> None:
    async with running_app(tiny_loaded) as (client, _):
        body = await (
            await client.post("/v1/chat/completions", json={**CHAT, "logprobs": True, "top_logprobs": 2})
        ).json()
        expected = tiny_loaded.tokenizer.apply_chat_template(
            CHAT["messages"], add_generation_prompt=True, tokenize=False
        )
        assert body["usage"]["prompt_tokens"] == len(tiny_loaded.tokenizer.encode(expected))
        assert body["choices"][0]["message"]["role"] == "assistant"
        assert len(body["choices"][0]["logprobs"]["content"]) == 4
        assert response_models_ok(await (await client.get("/v1/models")).json())


def response_models_ok(body: dict[str, Any]) -> bool:
    return bool(body["data"][0]["id"] == "model")


async def test_metrics_are_labelled_and_count(tiny_loaded: Any) -> None:
    async with running_app(tiny_loaded) as (client, _):
        for _ in range(3):
            await client.post("/v1/completions", json=GOOD)
        await client.post("/v1/completions", json={**GOOD, "model": "nope"})
        text = await (await client.get("/metrics")).text()
    identity = {"model_deployment": "md", "namespace": "ns", "revision": "r1"}
    user = {**identity, "endpoint": "completions", "source": "user"}
    assert sample(text, "modelship_requests_total", code="200", **user) == 3.0
    assert sample(text, "modelship_requests_total", code="404", **user) == 1.0
    assert sample(text, "modelship_generation_tokens_total", **identity) == 18.0
    assert sample(text, "modelship_request_duration_seconds_count", **user) == 4.0
    for name in (
        "modelship_request_duration_seconds_bucket",
        "modelship_queue_duration_seconds_count",
        "modelship_time_to_first_token_seconds_count",
        "modelship_batch_size_bucket",
        "modelship_prefill_duration_seconds_count",
        "modelship_decode_step_duration_seconds_count",
        "modelship_prompt_tokens_total",
        "modelship_requests_running",
        "modelship_input_drift_score",
        "modelship_model_ready",
    ):
        assert name in text, name


async def test_mirror_probes_are_counted_apart_from_user_traffic(tiny_loaded: Any) -> None:
    async with running_app(tiny_loaded) as (client, _):
        await client.post("/v1/completions", json=GOOD)
        await client.post("/v1/completions", json=GOOD, headers={"x-modelship-mirror": "1"})
        await client.post("/v1/completions", json={**GOOD, "max_tokens": "x"}, headers={"x-modelship-mirror": "1"})
        text = await (await client.get("/metrics")).text()
    labels = {"endpoint": "completions", "revision": "r1"}
    assert sample(text, "modelship_requests_total", code="200", source="user", **labels) == 1.0
    assert sample(text, "modelship_requests_total", code="200", source="mirror", **labels) == 1.0
    assert sample(text, "modelship_requests_total", code="422", source="mirror", **labels) == 1.0
    assert sample(text, "modelship_request_duration_seconds_count", source="user", **labels) == 1.0


@pytest.mark.parametrize("stream", [False, True])
async def test_a_client_that_hangs_up_is_499_and_its_sequence_is_cancelled(tiny_loaded: Any, stream: bool) -> None:
    long = {**GOOD, "max_tokens": 400, "ignore_eos": True, "stream": stream}
    async with running_app(tiny_loaded) as (client, dataplane):
        assert dataplane.engine is not None

        async def hang_up() -> None:
            response = await client.post("/v1/completions", json=long)
            if stream:
                await response.content.readline()  # the first event: generation is under way
            response.close()  # drop the connection, as a client giving up does

        if stream:
            await hang_up()
        else:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(hang_up(), timeout=0.15)
        engine: Any = dataplane.engine
        deadline = time.monotonic() + 2.0
        while engine.active and time.monotonic() < deadline:  # noqa: ASYNC110 (the engine is a thread)
            await asyncio.sleep(0.01)
        assert not engine.active
        await asyncio.sleep(0.05)  # the handler's own bookkeeping finishes after the engine lets go
        text = await (await client.get("/metrics")).text()
        after = await client.post("/v1/completions", json=GOOD)
        assert after.status == 200
    labels = {"endpoint": "completions", "source": "user"}
    assert sample(text, "modelship_requests_total", code="499", **labels) == 1.0
    assert sample(text, "modelship_requests_total", code="500", **labels) is None
    # Cut short: had it run on, the engine would have taken 399 decode steps before letting it go.
    steps = sample(text, "modelship_decode_step_duration_seconds_count", revision="r1")
    assert steps is not None
    assert steps < 300


async def _complete(client: Any, **fields: Any) -> dict[str, Any]:
    response = await client.post("/v1/completions", json={**GOOD, **fields})
    document = await response.json()
    assert response.status == 200, document
    return dict(document)


async def test_sampling_controls_change_what_is_generated(tiny_loaded: Any) -> None:
    """logit_bias, min_tokens, stop_token_ids, the penalties, top_k and min_p do what vLLM's do."""
    end = min(tiny_loaded.eos_token_ids)
    async with running_app(tiny_loaded) as (client, _):
        plain = await _complete(client)
        # A +100 bias makes a token the greedy choice every time.
        forced = await _complete(client, logit_bias={"7": 100})
        assert forced["choices"][0]["text"] == tiny_loaded.tokenizer.decode([7] * 6)
        # The end token forced: it ends at once, unless min_tokens holds it back; a stop token ends it too.
        assert (await _complete(client, logit_bias={str(end): 100}))["usage"]["completion_tokens"] == 0
        held = await _complete(client, logit_bias={str(end): 100}, min_tokens=3)
        assert (held["usage"]["completion_tokens"], held["choices"][0]["finish_reason"]) == (3, "stop")
        stopped = await _complete(client, logit_bias={"7": 100}, stop_token_ids=[7])
        assert (stopped["usage"]["completion_tokens"], stopped["choices"][0]["finish_reason"]) == (0, "stop")
        # A frequency penalty breaks a forced repeat once it outweighs the bias (the tiny model's logits
        # lie within +-6, so +15 wins every position until seven repeats have cost 14).
        repeated = await _complete(client, logit_bias={"7": 15}, max_tokens=12)
        penalised = await _complete(client, logit_bias={"7": 15}, max_tokens=12, frequency_penalty=2.0)
        assert repeated["choices"][0]["text"] == tiny_loaded.tokenizer.decode([7] * 12)
        assert penalised["choices"][0]["text"] != repeated["choices"][0]["text"]
        # top_k 1 and min_p 1 leave only the most likely token: sampling at temperature 1 becomes greedy.
        for narrowing in ({"top_k": 1}, {"min_p": 1.0}):
            sampled = await _complete(client, temperature=1.0, seed=3, **narrowing)
            assert sampled["choices"][0]["text"] == plain["choices"][0]["text"]


async def test_n_choices_and_lists_of_prompts(tiny_loaded: Any) -> None:
    """n choices per prompt, numbered prompt-major as OpenAI does; a prompt as token ids is the same
    prompt; a seed makes each choice reproducible and the choices differ; usage counts each prompt once."""
    ids = tiny_loaded.tokenizer.encode("hello world")
    async with running_app(tiny_loaded) as (client, _):
        one = await _complete(client)
        as_ids = await _complete(client, prompt=ids)
        assert as_ids["choices"][0]["text"] == one["choices"][0]["text"]
        other = await _complete(client, prompt="other words")
        both = await _complete(client, prompt=["hello world", "hello world", "other words"], n=2)
        texts = [c["text"] for c in both["choices"]]
        assert [c["index"] for c in both["choices"]] == list(range(6))
        # Greedy: every choice of the same prompt agrees with the prompt asked alone.
        assert texts == [one["choices"][0]["text"]] * 4 + [other["choices"][0]["text"]] * 2
        assert both["usage"]["prompt_tokens"] == 2 * one["usage"]["prompt_tokens"] + other["usage"]["prompt_tokens"]
        assert both["usage"]["completion_tokens"] == (
            4 * one["usage"]["completion_tokens"] + 2 * other["usage"]["completion_tokens"]
        )
        batched_ids = await _complete(client, prompt=[ids, ids])
        assert [c["text"] for c in batched_ids["choices"]] == [one["choices"][0]["text"]] * 2
        seeded = await _complete(client, temperature=1.0, seed=11, n=3, max_tokens=8)
        again = await _complete(client, temperature=1.0, seed=11, n=3, max_tokens=8)
        samples = [c["text"] for c in seeded["choices"]]
        assert samples == [c["text"] for c in again["choices"]]
        assert len(set(samples)) > 1
        chat = await client.post("/v1/chat/completions", json={**CHAT, "n": 3})
        document = await chat.json()
        assert [c["index"] for c in document["choices"]] == [0, 1, 2]


async def test_n_choices_stream_interleaved_with_one_usage_chunk(tiny_loaded: Any) -> None:
    body = {**GOOD, "n": 2, "prompt": ["hello world", "other words"], "stream": True}
    body["stream_options"] = {"include_usage": True}
    async with running_app(tiny_loaded) as (client, _):
        response = await client.post("/v1/completions", json=body)
        assert response.status == 200
        raw = (await response.read()).decode()
        chunks = [json.loads(line[6:]) for line in raw.splitlines() if line.startswith("data: {")]
        finishes = [c["choices"][0]["index"] for c in chunks if c["choices"] and c["choices"][0]["finish_reason"]]
        assert sorted(finishes) == [0, 1, 2, 3]
        assert chunks[-1]["choices"] == []
        streamed = {
            i: "".join(c["choices"][0]["text"] for c in chunks if c["choices"] and c["choices"][0]["index"] == i)
            for i in range(4)
        }
        whole = await _complete(client, n=2, prompt=["hello world", "other words"])
        assert streamed == {c["index"]: c["text"] for c in whole["choices"]}
        assert chunks[-1]["usage"] == whole["usage"]


async def test_each_choice_is_counted_by_its_content_and_source(tiny_loaded: Any) -> None:
    """The content SLI's counter: every choice once as "all", streamed or not, chat or completion, and once
    per kind of issue it has (the tiny random model's answers are all cut by max_tokens); the router's mirror
    probes in their own series."""
    async with running_app(tiny_loaded) as (client, _):
        await client.post("/v1/completions", json={**GOOD, "n": 2})  # 6 tokens: cut by max_tokens
        await client.post("/v1/completions", json={**GOOD, "stream": True})
        await client.post("/v1/chat/completions", json=CHAT)
        await client.post("/v1/completions", json=GOOD, headers={MIRROR_HEADER: "1"})
        text = await (await client.get("/metrics")).text()

    def choices(outcome: str, **labels: str) -> float | None:
        return sample(text, "modelship_choices_total", outcome=outcome, **labels)

    assert choices(OUTCOME_ALL, endpoint="completions", source="user") == 3.0
    assert choices("truncated", endpoint="completions", source="user") == 3.0
    assert choices(OUTCOME_ALL, endpoint="completions", source="mirror") == 1.0
    assert choices(OUTCOME_ALL, endpoint="chat_completions", source="user") == 1.0
    assert choices("empty", endpoint="completions", source="user") is None
    # each kind at most once per choice
    for outcome in CONTENT_ISSUES:
        assert (choices(outcome, endpoint="completions", source="user") or 0) <= 3.0


async def test_injected_empty_answers_are_200_and_counted_as_empty(tiny_loaded: Any) -> None:
    async with running_app(tiny_loaded, faults_enabled=True, fault_empty_rate=1.0) as (client, _):
        whole = await client.post("/v1/completions", json=GOOD)
        streamed = await client.post("/v1/chat/completions", json={**CHAT, "stream": True})
        assert whole.status == 200
        assert streamed.status == 200
        answer = await whole.json()
        assert answer["choices"][0]["text"] == ""
        assert answer["choices"][0]["finish_reason"] == "stop"
        assert answer["usage"]["completion_tokens"] == 0
        assert (await streamed.text()).rstrip().endswith("[DONE]")
        text = await (await client.get("/metrics")).text()
    for endpoint in ("completions", "chat_completions"):
        assert sample(text, "modelship_choices_total", endpoint=endpoint, source="user", outcome="empty") == 1.0
        assert sample(text, "modelship_choices_total", endpoint=endpoint, source="user", outcome=OUTCOME_ALL) == 1.0


async def test_tokenize_gives_the_ids_generation_uses(tiny_loaded: Any) -> None:
    """vLLM's /tokenize: the ids of a completion prompt, and of a chat as the chat template renders it,
    the same ones (and as many) as the generation endpoints count in usage.prompt_tokens."""
    async with running_app(tiny_loaded) as (client, _):
        plain = await (await client.post("/tokenize", json={"model": "model", "prompt": GOOD["prompt"]})).json()
        assert plain["tokens"] == list(tiny_loaded.tokenizer.encode(GOOD["prompt"]))
        assert plain["count"] == len(plain["tokens"])
        assert plain["max_model_len"] == tiny_loaded.max_positions
        completed = await (await client.post("/v1/completions", json=GOOD)).json()
        assert completed["usage"]["prompt_tokens"] == plain["count"]
        chat = await (await client.post("/tokenize", json={"messages": CHAT["messages"]})).json()
        chatted = await (await client.post("/v1/chat/completions", json=CHAT)).json()
        assert chat["count"] == chatted["usage"]["prompt_tokens"]
        rendered = tiny_loaded.tokenizer.apply_chat_template(
            CHAT["messages"], add_generation_prompt=True, tokenize=False
        )
        assert chat["tokens"] == list(tiny_loaded.tokenizer.encode(rendered, add_special_tokens=False))
        bare = await (
            await client.post("/tokenize", json={"messages": CHAT["messages"], "add_generation_prompt": False})
        ).json()
        assert bare["count"] < chat["count"]
