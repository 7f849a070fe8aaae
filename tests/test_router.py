"""The router: routing-config validation, weighted and sticky splitting, output divergence, and the proxy
itself (retries, streaming, mirroring, bad configs) against small upstream servers on loopback."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from scipy.stats import binomtest

from model_runtime.router.config import RoutingError, check_revisions, parse_routing
from model_runtime.router.discovery import FileDiscovery, ready_endpoints
from model_runtime.router.divergence import mean_divergence, position_divergence, top_tokens
from model_runtime.router.metrics import RouterMetrics
from model_runtime.router.proxy import Router, probe_request
from model_runtime.router.settings import RouterSettings
from model_runtime.router.split import choose_track, sticky_bucket
from model_runtime.router.state import RouterState


def routing(canary: int, stable_rev: str = "s1", canary_rev: str = "c1", **extra: Any) -> dict[str, Any]:
    tracks = [{"name": "stable", "revision": stable_rev, "weight": 100 - canary}]
    if canary_rev:
        tracks.append({"name": "canary", "revision": canary_rev, "weight": canary})
    return {"version": 1, "tracks": tracks, **extra}


BAD_CONFIGS = [
    ("empty", "", "empty"),
    ("not-json", "{tracks:", "not valid JSON"),
    ("no-tracks", json.dumps({"version": 1, "tracks": []}), "tracks"),
    (
        "weights-not-100",
        json.dumps(routing(10) | {"tracks": [{"name": "stable", "revision": "s", "weight": 50}]}),
        "add up to 100",
    ),
    (
        "negative-weight",
        json.dumps(
            {
                "tracks": [
                    {"name": "stable", "revision": "s", "weight": 110},
                    {"name": "canary", "revision": "c", "weight": -10},
                ]
            }
        ),
        "weight",
    ),
    ("no-stable", json.dumps({"tracks": [{"name": "canary", "revision": "c", "weight": 100}]}), "stable"),
    (
        "twice-stable",
        json.dumps(
            {
                "tracks": [
                    {"name": "stable", "revision": "a", "weight": 50},
                    {"name": "stable", "revision": "b", "weight": 50},
                ]
            }
        ),
        "once",
    ),
    ("unknown-version", json.dumps(routing(10) | {"version": 7}), "version"),
    ("mirror-over-100", json.dumps(routing(10, mirrorPercent=300)), "mirrorPercent"),
]


@pytest.mark.parametrize(("text", "words"), [c[1:] for c in BAD_CONFIGS], ids=[c[0] for c in BAD_CONFIGS])
def test_bad_routing_configs_are_refused(text: str, words: str) -> None:
    with pytest.raises(RoutingError, match=words):
        parse_routing(text)


def test_a_track_with_weight_must_have_pods() -> None:
    config = parse_routing(json.dumps(routing(10)))
    check_revisions(config, {"s1", "c1"})
    with pytest.raises(RoutingError, match="revision c1, which has no pods"):
        check_revisions(config, {"s1"})
    check_revisions(parse_routing(json.dumps(routing(0))), {"s1"})  # weight 0: fine


@pytest.mark.parametrize("weight", [0, 10, 50, 90, 100])
def test_weighted_split_over_draws(weight: int) -> None:
    config = parse_routing(json.dumps(routing(weight)))
    picks = Counter(choose_track(config, None, draw / 10) for draw in range(1000))
    assert picks["canary"] == weight * 10


def test_sticky_header_pins_a_client_and_spreads_clients() -> None:
    config = parse_routing(json.dumps(routing(30)))
    assert {choose_track(config, "user-7", d) for d in (0.0, 50.0, 99.9)} == {choose_track(config, "user-7", 0)}
    share = Counter(choose_track(config, f"user-{i}", 0) for i in range(2000))["canary"] / 2000
    assert 0.25 < share < 0.35
    assert sticky_bucket("x") == sticky_bucket("x")


def test_divergence_identical_is_zero_and_disjoint_is_high() -> None:
    a = {"Paris": math.log(0.9), " the": math.log(0.05)}
    assert position_divergence(a, a) == pytest.approx(0.0, abs=1e-12)
    far = position_divergence(a, {"Berlin": math.log(0.9), " a": math.log(0.05)})
    assert far > 0.6
    near = position_divergence(a, {"Paris": math.log(0.85), " the": math.log(0.08)})
    assert near < 0.01
    assert mean_divergence([a, a], [a]) == pytest.approx(0.0)
    assert mean_divergence([], [a]) is None
    assert mean_divergence([{}, {}], [a, a]) is None  # positions without alternatives compare nothing
    assert mean_divergence([{}, a], [a, a]) == pytest.approx(0.0)


def test_top_tokens_reads_both_response_shapes() -> None:
    completion = {"choices": [{"logprobs": {"top_logprobs": [{"a": -0.1}, {"b": -0.2}]}}]}
    chat = {
        "choices": [
            {
                "logprobs": {
                    "content": [{"token": "a", "logprob": -0.1, "top_logprobs": [{"token": "a", "logprob": -0.1}]}]
                }
            }
        ]
    }
    assert top_tokens(completion) == [{"a": -0.1}, {"b": -0.2}]
    assert top_tokens(chat) == [{"a": -0.1}]
    assert top_tokens({"choices": []}) == []


def _slice(revision: str | None, *endpoints: tuple[str, bool], port: int | None = 8080) -> dict[str, Any]:
    labels = {"modelship.io/revision": revision} if revision else {}
    return {
        "metadata": {"labels": labels},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": port}] if port else [],
        "endpoints": [{"addresses": [ip], "conditions": {"ready": ready}} for ip, ready in endpoints],
    }


@pytest.mark.parametrize(
    ("slices", "ready", "known"),
    [
        ([_slice("s", ("10.0.0.2", True), ("10.0.0.3", False))], {"s": ["10.0.0.2:8080"]}, {"s"}),
        # Terminating endpoints are not ready: known, out of rotation.
        ([_slice("c", ("10.0.0.4", False))], {}, {"c"}),
        # A Service without endpoints yet: its revision has no pods.
        ([_slice("c")], {}, set()),
        # Two slices of one Service add up; the slice's port wins over the fallback.
        (
            [_slice("s", ("10.0.0.2", True)), _slice("s", ("10.0.0.5", True), port=9000)],
            {"s": ["10.0.0.2:8080", "10.0.0.5:9000"]},
            {"s"},
        ),
        ([_slice("s", ("10.0.0.2", True), port=None)], {"s": ["10.0.0.2:7777"]}, {"s"}),
        # Not a revision's Service (replicas mode's shared one): ignored.
        ([_slice(None, ("10.0.0.9", True))], {}, set()),
        ([{**_slice("s", ("fd00::1", True)), "addressType": "IPv6"}], {}, set()),
    ],
)
def test_ready_endpoints_from_endpoint_slices(
    slices: list[dict[str, Any]], ready: dict[str, list[str]], known: set[str]
) -> None:
    assert ready_endpoints(slices, 7777) == (ready, known)


def test_probe_request_is_greedy_with_logprobs() -> None:
    probe = probe_request("/v1/completions", {"model": "m", "prompt": "p", "max_tokens": 300, "stream": True}, 4, 10)
    assert probe == {
        "model": "m",
        "prompt": "p",
        "max_tokens": 4,
        "temperature": 0.0,
        "logprobs": 10,
        "ignore_eos": True,  # an answer that ends at once still yields distributions to compare
    }
    chat = probe_request("/v1/chat/completions", {"model": "m", "messages": [{"role": "user", "content": "x"}]}, 4, 5)
    assert chat["logprobs"] is True
    assert chat["top_logprobs"] == 5
    assert chat["ignore_eos"] is True


# ---- the proxy, in-process ------------------------------------------------------------------------------
class Upstream:
    """A small stand-in for a runtime pod: answers with its revision, optionally draining or streaming."""

    def __init__(self, revision: str, top: dict[str, float] | None = None) -> None:
        self.revision = revision
        self.says = revision  # its own revision header: "" for a server that knows none (vLLM, any image)
        self.draining = False
        self.top = top or {"a": math.log(0.7), "b": math.log(0.2)}
        self.seen: list[dict[str, Any]] = []
        self.runner: web.AppRunner | None = None
        self.address = ""

    async def handle(self, request: web.Request) -> web.StreamResponse:
        document = await request.json()
        self.seen.append({"body": document, "mirror": request.headers.get("x-modelship-mirror")})
        if self.draining:
            return web.json_response({"error": {"type": "not_ready", "message": "draining"}}, status=503)
        if document.get("stream"):
            response = web.StreamResponse(headers={"Content-Type": "text/event-stream", **self._identity()})
            await response.prepare(request)
            for piece in ("one", "two", "three"):
                await response.write(f"data: {piece}\n\n".encode())
            await response.write_eof()
            return response
        answer = {"choices": [{"text": "x", "logprobs": {"top_logprobs": [self.top] * 4}}]}
        return web.json_response(answer, headers=self._identity())

    def _identity(self) -> dict[str, str]:
        return {"x-modelship-revision": self.says} if self.says else {}

    async def start(self, host: str) -> None:
        app = web.Application()
        app.router.add_post("/v1/completions", self.handle)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, host, 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]
        self.address = f"{host}:{port}"

    async def stop(self) -> None:
        if self.runner:
            await self.runner.cleanup()


class Client:
    """A small HTTP client for the router under test (aiohttp, from outside the router's own code)."""

    def __init__(self, base: str, session: aiohttp.ClientSession) -> None:
        self.base, self.session = base, session

    async def post(self, path: str, **kwargs: Any) -> Response:
        async with self.session.post(self.base + path, **kwargs) as response:
            return Response(
                response.status, dict(response.headers), await response.read(), list(response.headers.items())
            )

    async def get(self, path: str) -> Response:
        async with self.session.get(self.base + path) as response:
            return Response(response.status, dict(response.headers), await response.read())


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes
    every_header: list[tuple[str, str]] = field(default_factory=list)  # repeated ones too

    async def json(self) -> Any:
        return json.loads(self.body)

    async def text(self) -> str:
        return self.body.decode()


@contextlib.asynccontextmanager
async def router_over(
    tmp_path: Path, routing_config: dict[str, Any], endpoints: dict[str, list[str]], **settings: Any
) -> AsyncIterator[tuple[Client, Router, Path]]:
    path = tmp_path / "routing.json"
    path.write_text(json.dumps({"routing": routing_config, "endpoints": endpoints}))
    config = RouterSettings.model_validate(
        {"routing_file": str(path), "namespace": "ns", "model_deployment": "md", **settings}
    )
    metrics = RouterMetrics("ns", "md")
    state = RouterState(metrics)
    router = Router(config, state, metrics)
    await router.start()
    discovery = FileDiscovery(str(path), state)
    task = asyncio.create_task(discovery.run())
    server = await router.serve("127.0.0.30", 0)
    port = server.sockets[0].getsockname()[1]
    await asyncio.sleep(0.05)
    try:
        async with aiohttp.ClientSession() as session:
            yield Client(f"http://127.0.0.30:{port}", session), router, path
    finally:
        task.cancel()
        server.close()
        await router.close()


@pytest.fixture
async def upstreams() -> AsyncIterator[dict[str, Upstream]]:
    pods = {
        "s1-a": Upstream("s1"),
        "s1-b": Upstream("s1"),
        "c1-a": Upstream("c1", top={"z": math.log(0.9), "y": math.log(0.05)}),
    }
    for index, pod in enumerate(pods.values()):
        await pod.start(f"127.0.0.{20 + index}")
    yield pods
    for pod in pods.values():
        await pod.stop()


def endpoints_of(pods: dict[str, Upstream]) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for name, pod in pods.items():
        found.setdefault(name.split("-")[0], []).append(pod.address)
    return found


BODY = {"model": "m", "prompt": "hello", "max_tokens": 3}
SPLIT_REQUESTS = 1000


async def test_split_follows_the_weight(tmp_path: Path, upstreams: dict[str, Upstream]) -> None:
    async with router_over(tmp_path, routing(30), endpoints_of(upstreams)) as (client, _, _):
        revisions: Counter[str] = Counter()
        for _ in range(SPLIT_REQUESTS):
            response = await client.post("/v1/completions", json=BODY)
            assert response.status == 200
            revisions[response.headers["x-modelship-revision"]] += 1
        # The split is random per request, so a fixed band around 30% failed a correct router about one run
        # in a hundred; the binomial test fails it one run in a million and still refuses 20% or 40%.
        assert binomtest(revisions["c1"], SPLIT_REQUESTS, 0.30).pvalue > 1e-6
        assert len(upstreams["s1-a"].seen) > 100
        assert len(upstreams["s1-b"].seen) > 100  # round robin within the track


@pytest.mark.parametrize("says", ["", "stale-or-wrong"])
async def test_every_answer_names_the_revision_the_router_sent_it_to(
    tmp_path: Path, upstreams: dict[str, Upstream], says: str
) -> None:
    for pod in upstreams.values():
        pod.says = says
    async with router_over(tmp_path, routing(50), endpoints_of(upstreams)) as (client, _, _):
        named: Counter[str] = Counter()
        for index in range(60):
            response = await client.post("/v1/completions", json={**BODY, "stream": index % 2 == 0})
            assert response.status == 200
            stamps = [value for key, value in response.every_header if key.lower() == "x-modelship-revision"]
            assert len(stamps) == 1, stamps
            named[response.headers["x-modelship-revision"]] += 1
    assert set(named) == {"s1", "c1"}
    seen = {revision: sum(len(p.seen) for n, p in upstreams.items() if n.startswith(revision)) for revision in named}
    assert named == seen  # each answer named the revision whose pod answered it


async def test_weight_change_applies_without_restart(tmp_path: Path, upstreams: dict[str, Upstream]) -> None:
    async with router_over(tmp_path, routing(0), endpoints_of(upstreams)) as (client, _, path):
        assert {
            (await client.post("/v1/completions", json=BODY)).headers["x-modelship-revision"] for _ in range(30)
        } == {"s1"}
        path.write_text(json.dumps({"routing": routing(100), "endpoints": endpoints_of(upstreams)}))
        await asyncio.sleep(0.6)
        assert {
            (await client.post("/v1/completions", json=BODY)).headers["x-modelship-revision"] for _ in range(30)
        } == {"c1"}


async def test_bad_config_keeps_the_last_good_routing(tmp_path: Path, upstreams: dict[str, Upstream]) -> None:
    async with router_over(tmp_path, routing(0), endpoints_of(upstreams)) as (client, router, path):
        for broken in (
            "{not json",
            json.dumps({"routing": routing(50, canary_rev="ghost"), "endpoints": endpoints_of(upstreams)}),
        ):
            path.write_text(broken)
            await asyncio.sleep(0.5)
            codes = {(await client.post("/v1/completions", json=BODY)).status for _ in range(20)}
            assert codes == {200}
            assert router.state.describe() == "stable s1 100%, canary c1 0%"
        metrics = await (await client.get("/metrics")).text()
        assert 'modelship_router_config_errors_total{model_deployment="md",namespace="ns"} 2.0' in metrics
        assert 'modelship_router_config_valid{model_deployment="md",namespace="ns"} 0.0' in metrics


async def test_refused_and_draining_pods_get_retried_elsewhere(tmp_path: Path, upstreams: dict[str, Upstream]) -> None:
    endpoints = endpoints_of(upstreams)
    endpoints["s1"].append("127.0.0.99:9")  # a pod that is gone: connection refused
    upstreams["s1-b"].draining = True
    async with router_over(tmp_path, routing(0), endpoints) as (client, _, _):
        codes = Counter([(await client.post("/v1/completions", json=BODY)).status for _ in range(60)])
        assert codes == Counter({200: 60})
        text = await (await client.get("/metrics")).text()
        assert "modelship_router_upstream_retries_total" in text


async def test_no_pods_is_a_clear_503(tmp_path: Path) -> None:
    async with router_over(tmp_path, routing(0, canary_rev=""), {"s1": ["127.0.0.99:9"]}) as (client, _, _):
        response = await client.post("/v1/completions", json=BODY)
        assert response.status == 503
        assert (await response.json())["error"]["type"] == "no_upstream"


async def test_streams_pass_through(tmp_path: Path, upstreams: dict[str, Upstream]) -> None:
    async with router_over(tmp_path, routing(0), endpoints_of(upstreams)) as (client, _, _):
        response = await client.post("/v1/completions", json={**BODY, "stream": True})
        assert response.headers["Content-Type"].startswith("text/event-stream")
        assert await response.text() == "data: one\n\ndata: two\n\ndata: three\n\n"


async def test_mirroring_measures_divergence_off_the_users_path(tmp_path: Path, upstreams: dict[str, Upstream]) -> None:
    async with router_over(
        tmp_path, routing(10, mirrorPercent=100, task="text-generation"), endpoints_of(upstreams)
    ) as (client, _, _):
        for _ in range(20):
            assert (await client.post("/v1/completions", json=BODY)).status == 200
        await asyncio.sleep(0.5)
        text = await (await client.get("/metrics")).text()
    count = next(line for line in text.splitlines() if line.startswith("modelship_output_divergence_count"))
    assert 'revision="c1"' in count
    assert float(count.rsplit(" ", 1)[1]) >= 10
    mirrored = [s for pod in upstreams.values() for s in pod.seen if s["mirror"] == "1"]
    assert mirrored
    assert all(s["body"]["temperature"] == 0.0 and s["body"]["logprobs"] == 10 for s in mirrored)
    mean = float(
        next(line for line in text.splitlines() if line.startswith("modelship_output_divergence_sum")).rsplit(" ", 1)[1]
    ) / float(count.rsplit(" ", 1)[1])
    assert mean > 0.5  # the stand-in canary answers differently


async def test_comparisons_without_logprobs_are_counted_and_logged_once(
    tmp_path: Path, upstreams: dict[str, Upstream], caplog: pytest.LogCaptureFixture
) -> None:
    for pod in upstreams.values():
        pod.top = {}  # answers that carry no distributions: nothing to compare
    async with router_over(
        tmp_path, routing(10, mirrorPercent=100, task="text-generation"), endpoints_of(upstreams)
    ) as (client, _, _):
        with caplog.at_level(logging.WARNING, logger="model_runtime.router"):
            for _ in range(10):
                assert (await client.post("/v1/completions", json=BODY)).status == 200
            await asyncio.sleep(0.5)
        text = await (await client.get("/metrics")).text()
    errors = next(line for line in text.splitlines() if line.startswith("modelship_router_mirror_errors_total"))
    assert float(errors.rsplit(" ", 1)[1]) >= 5
    warnings = [r for r in caplog.records if "mirror comparison failed" in r.getMessage()]
    assert len(warnings) == 1
    assert "no token logprobs" in warnings[0].getMessage()


async def test_full_mirror_queue_drops_and_counts(tmp_path: Path, upstreams: dict[str, Upstream]) -> None:
    async with router_over(
        tmp_path, routing(10, mirrorPercent=100), endpoints_of(upstreams), mirror_queue=1, mirror_workers=1
    ) as (client, _, _):
        await asyncio.gather(*(client.post("/v1/completions", json=BODY) for _ in range(40)))
        text = await (await client.get("/metrics")).text()
    dropped = next(line for line in text.splitlines() if line.startswith("modelship_router_mirror_dropped_total"))
    assert float(dropped.rsplit(" ", 1)[1]) > 0


async def test_api_key_and_body_limit(tmp_path: Path, upstreams: dict[str, Upstream]) -> None:
    async with router_over(tmp_path, routing(0), endpoints_of(upstreams), api_key="k", max_body_bytes=2048) as (
        client,
        _,
        _,
    ):
        assert (await client.post("/v1/completions", json=BODY)).status == 401
        ok = await client.post("/v1/completions", json=BODY, headers={"Authorization": "Bearer k"})
        assert ok.status == 200
        big = await client.post(
            "/v1/completions", json={**BODY, "prompt": "x" * 5000}, headers={"Authorization": "Bearer k"}
        )
        assert big.status == 413
        assert (await client.get("/health/ready")).status == 200


def test_router_settings_need_a_source() -> None:
    from model_runtime.settings import SettingsError, parse_settings

    with pytest.raises(SettingsError, match="routing_configmap and namespace"):
        parse_settings(RouterSettings, [], {}, "router")


async def test_malformed_http_gets_a_400_and_the_router_goes_on(tmp_path: Path, upstreams: dict[str, Upstream]) -> None:
    async with router_over(tmp_path, routing(0), endpoints_of(upstreams)) as (client, _, _):
        host, port = client.base.removeprefix("http://").split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(b"NOT-HTTP garbage\r\n\r\n")
        answer = await reader.read(4096)
        writer.close()
        assert answer.startswith(b"HTTP/1.1 400")
        assert b'"type": "invalid_request_error"' in answer
        assert (await client.post("/v1/completions", json=BODY)).status == 200


async def test_a_hanging_pod_is_a_504_and_a_broken_stream_a_502(tmp_path: Path) -> None:
    async def hang(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1024)
        await asyncio.sleep(5)

    async def break_off(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1024)
        writer.write(
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n"
        )
        await writer.drain()
        writer.close()

    hanging = await asyncio.start_server(hang, "127.0.0.40", 0)
    broken = await asyncio.start_server(break_off, "127.0.0.41", 0)
    try:
        for server, status in ((hanging, 504), (broken, 502)):
            address = f"127.0.0.{40 if server is hanging else 41}:{server.sockets[0].getsockname()[1]}"
            async with router_over(
                tmp_path, routing(0, canary_rev=""), {"s1": [address]}, upstream_timeout_seconds=0.5
            ) as (client, _, _):
                response = await client.post("/v1/completions", json=BODY)
                if status == 504:
                    assert response.status == 504
                    assert (await response.json())["error"]["type"] == "timeout"
                else:
                    assert response.status == 200  # the head was already relayed...
                    assert b"hello" in response.body  # ...and what came before the break with it
    except aiohttp.ClientPayloadError:
        pass  # the client may also see the stream cut short: both are a clear failure, not a hang
    finally:
        hanging.close()
        broken.close()
