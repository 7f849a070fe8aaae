"""The router's HTTP side: pick a track and a pod, forward the request, relay the answer (streamed
answers as they come), and send a share of requests to both tracks off the user's path to measure how
differently they answer.

A pod that refuses the connection or answers 503 while draining gets the request retried on another pod:
nothing was processed, so nothing is sent twice, and a rollout's scale-downs lose no request.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import random
import time
from typing import Any

import aiohttp
from aiohttp import web

from model_runtime.errors import ApiError, BodyTooLarge, NotReady, Unauthorized

from .divergence import mean_divergence, top_tokens
from .metrics import RouterMetrics
from .settings import RouterSettings
from .split import Endpoint, choose_track, uniform_draw
from .state import RouterState

log = logging.getLogger("model_runtime.router")
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailers",
        "transfer-encoding",
        "upgrade",
        "host",
        "content-length",
    }
)
MIRRORED_PATHS = ("/v1/completions", "/v1/chat/completions")
RETRYABLE = (aiohttp.ClientConnectorError, aiohttp.ServerDisconnectedError, aiohttp.ClientOSError)


class NoUpstream(ApiError):
    status = 503
    kind = "no_upstream"


class BadGateway(ApiError):
    status = 502
    kind = "bad_gateway"


class Router:
    def __init__(self, settings: RouterSettings, state: RouterState, metrics: RouterMetrics) -> None:
        self.settings = settings
        self.state = state
        self.metrics = metrics
        self.session: aiohttp.ClientSession | None = None
        self.mirror_queue: asyncio.Queue[tuple[str, bytes, Endpoint, Endpoint, dict[str, str]]] = asyncio.Queue(
            maxsize=settings.mirror_queue
        )
        self.draining = False
        self.in_flight = 0
        self.idle = asyncio.Event()
        self.idle.set()

    # ---- life -------------------------------------------------------------------------------------
    async def start(self) -> None:
        connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=30, ttl_dns_cache=None)
        self.session = aiohttp.ClientSession(
            connector=connector,
            auto_decompress=False,
            timeout=aiohttp.ClientTimeout(total=self.settings.upstream_timeout_seconds, sock_connect=2),
        )
        self._workers = [asyncio.create_task(self._mirror_worker()) for _ in range(self.settings.mirror_workers)]

    async def close(self) -> None:
        for worker in self._workers:
            worker.cancel()
        if self.session is not None:
            await self.session.close()

    def app(self) -> web.Application:
        app = web.Application(client_max_size=self.settings.max_body_bytes)
        app.router.add_get("/health/live", self.live)
        app.router.add_get("/health/ready", self.ready)
        app.router.add_get("/metrics", self.render_metrics)
        app.router.add_route("*", "/{tail:.*}", self.proxy)
        return app

    async def live(self, request: web.Request) -> web.StreamResponse:
        return web.json_response({"status": "alive"})

    async def ready(self, request: web.Request) -> web.StreamResponse:
        if self.draining:
            return _error(NotReady("draining: the router is shutting down"))
        if self.state.config is None:
            return _error(NotReady("no routing config yet"))
        return web.json_response({"status": "ready", "routing": self.state.describe()})

    async def render_metrics(self, request: web.Request) -> web.StreamResponse:
        return web.Response(body=self.metrics.render(), headers={"Content-Type": "text/plain; version=0.0.4"})

    # ---- proxying ---------------------------------------------------------------------------------
    async def proxy(self, request: web.Request) -> web.StreamResponse:
        started = time.monotonic()
        self.in_flight += 1
        self.idle.clear()
        track, revision, status = "none", "none", 500
        try:
            if self.draining:
                raise NotReady("the router is shutting down")
            self._authorize(request)
            try:
                body = await request.read()
            except web.HTTPRequestEntityTooLarge:
                raise BodyTooLarge(f"the request body is over {self.settings.max_body_bytes} bytes") from None
            response, track, revision = await self._forward(request, body)
            status = response.status
            return response
        except ApiError as error:
            status = error.status
            return _error(error)
        finally:
            self.metrics.request(track, revision, status, time.monotonic() - started)
            self.in_flight -= 1
            if self.in_flight == 0:
                self.idle.set()

    def _authorize(self, request: web.Request) -> None:
        expected = self.settings.api_key
        if not expected or not request.path.startswith("/v1/"):
            return
        given = request.headers.get("Authorization", "")
        token = given[7:].strip() if given.startswith("Bearer ") else ""
        if not hmac.compare_digest(token.encode(), expected.encode()):
            raise Unauthorized("a valid API key is required: send Authorization: Bearer <key>")

    async def _forward(self, request: web.Request, body: bytes) -> tuple[web.StreamResponse, str, str]:
        config = self.state.config
        if config is None:
            raise NoUpstream("the router has no routing config yet")
        sticky = request.headers.get(config.sticky_header) if config.sticky_header else None
        first_choice = choose_track(config, sticky, uniform_draw())
        order = [first_choice, "canary" if first_choice == "stable" else "stable"]
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
        tried: set[str] = set()
        assert self.session is not None
        for attempt in range(self.settings.attempts):
            endpoint, track = self._pick(order, frozenset(tried))
            if endpoint is None:
                break
            tried.add(endpoint.address)
            if attempt:
                self.metrics.retries.labels(*self.metrics.identity).inc()
            try:
                upstream = await self.session.request(
                    request.method,
                    f"http://{endpoint.address}{request.path_qs}",
                    data=body,
                    headers=headers,
                    allow_redirects=False,
                )
            except RETRYABLE:
                self._eject(endpoint)
                continue
            except TimeoutError:
                raise BadGateway(f"revision {endpoint.revision} did not answer in time") from None
            if upstream.status == 503 and await _draining(upstream):
                upstream.release()
                self._eject(endpoint)
                continue
            response = await self._relay(request, upstream)
            if upstream.status == 200 and config.mirror_percent and config.task == "text-generation":
                self._maybe_mirror(request.path, body, headers, config.mirror_percent)
            return response, track, endpoint.revision
        raise NoUpstream(f"no pod answered ({self.state.describe()}; tried {len(tried)})")

    def _pick(self, order: list[str], avoid: frozenset[str]) -> tuple[Endpoint | None, str]:
        for track in order:
            pool, _ = self.state.pool(track)
            if pool is not None:
                endpoint = pool.pick(avoid)
                if endpoint is not None:
                    return endpoint, track
        return None, ""

    def _eject(self, endpoint: Endpoint) -> None:
        pool = self.state.pools.get(endpoint.revision)
        if pool is not None:
            pool.eject(endpoint.address)

    async def _relay(self, request: web.Request, upstream: aiohttp.ClientResponse) -> web.StreamResponse:
        headers = {k: v for k, v in upstream.headers.items() if k.lower() not in HOP_BY_HOP}
        try:
            if upstream.headers.get("Content-Type", "").startswith("text/event-stream"):
                response = web.StreamResponse(status=upstream.status, headers=headers)
                await response.prepare(request)
                async for chunk in upstream.content.iter_any():
                    await response.write(chunk)
                await response.write_eof()
                return response
            return web.Response(status=upstream.status, body=await upstream.read(), headers=headers)
        finally:
            upstream.release()

    # ---- mirroring --------------------------------------------------------------------------------
    def _maybe_mirror(self, path: str, body: bytes, headers: dict[str, str], percent: float) -> None:
        if path not in MIRRORED_PATHS or random.random() * 100 >= percent:
            return
        stable_pool, _ = self.state.pool("stable")
        canary_pool, _ = self.state.pool("canary")
        stable = stable_pool.pick() if stable_pool else None
        canary = canary_pool.pick() if canary_pool else None
        if stable is None or canary is None:
            return
        auth = {k: v for k, v in headers.items() if k.lower() == "authorization"}
        try:
            self.mirror_queue.put_nowait((path, body, stable, canary, auth))
        except asyncio.QueueFull:
            self.metrics.mirror_dropped.labels(*self.metrics.identity).inc()

    async def _mirror_worker(self) -> None:
        while True:
            path, body, stable, canary, auth = await self.mirror_queue.get()
            try:
                await self._compare(path, body, stable, canary, auth)
            except Exception as error:  # a comparison must never take the worker down
                self.metrics.mirror_errors.labels(*self.metrics.identity).inc()
                log.debug("mirror comparison failed: %s", error)

    async def _compare(self, path: str, body: bytes, stable: Endpoint, canary: Endpoint, auth: dict[str, str]) -> None:
        probe = probe_request(path, json.loads(body), self.settings.divergence_tokens, self.settings.divergence_top_k)
        assert self.session is not None
        answers = await asyncio.gather(*(self._probe(e, path, probe, auth) for e in (stable, canary)))
        divergence = mean_divergence(top_tokens(answers[0]), top_tokens(answers[1]))
        if divergence is None:
            self.metrics.mirror_errors.labels(*self.metrics.identity).inc()
            return
        self.metrics.divergence.labels(*self.metrics.identity, canary.revision).observe(divergence)

    async def _probe(self, endpoint: Endpoint, path: str, probe: dict[str, Any], auth: dict[str, str]) -> Any:
        assert self.session is not None
        async with self.session.post(
            f"http://{endpoint.address}{path}", json=probe, headers={**auth, "x-modelship-mirror": "1"}
        ) as response:
            response.raise_for_status()
            return await response.json()


def probe_request(path: str, original: dict[str, Any], tokens: int, top_k: int) -> dict[str, Any]:
    """The same prompt, greedy, a few tokens, with top-k logprobs: both tracks see exactly this."""
    if path == "/v1/chat/completions":
        return {
            "model": original["model"],
            "messages": original["messages"],
            "max_tokens": tokens,
            "temperature": 0.0,
            "logprobs": True,
            "top_logprobs": top_k,
        }
    return {
        "model": original["model"],
        "prompt": original["prompt"],
        "max_tokens": tokens,
        "temperature": 0.0,
        "logprobs": top_k,
    }


async def _draining(upstream: aiohttp.ClientResponse) -> bool:
    """A 503 that means "not taking requests" (the request was not processed), not an answer to relay."""
    try:
        document = await upstream.json(content_type=None)
    except (ValueError, aiohttp.ClientError):
        return False
    return isinstance(document, dict) and document.get("error", {}).get("type") == "not_ready"


def _error(error: ApiError) -> web.Response:
    return web.json_response(error.body(), status=error.status)
