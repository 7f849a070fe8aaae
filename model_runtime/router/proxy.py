"""The router's request path: pick a track and a pod, forward the request, relay the answer (streamed
answers as they come), and send a share of requests to both tracks off the user's path to measure how
differently they answer.

A pod that refuses the connection or answers 503 while draining gets the request retried on another pod:
nothing was processed, so nothing is sent twice, and a rollout's scale-downs lose no request.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from typing import Any

import aiohttp

from model_runtime.contract import MIRROR_HEADER, REVISION_HEADER
from model_runtime.errors import ApiError, BodyTooLarge, InvalidRequest, NotReady, check_bearer

from .divergence import mean_divergence, top_tokens
from .http import Headers, Pool, Reply, Request, ServerProtocol, UpstreamClosed
from .metrics import RouterMetrics
from .settings import RouterSettings
from .split import Endpoint, choose_track, uniform_draw
from .state import RouterState

log = logging.getLogger("model_runtime.router")
MIRRORED_PATHS = ("/v1/completions", "/v1/chat/completions")
MIRROR_WARNING_EVERY_SECONDS = 60.0
JSON = [(b"content-type", b"application/json")]
LOCAL_ROUTES = {"/health/live": "live", "/health/ready": "ready", "/metrics": "render_metrics"}


class NoUpstream(ApiError):
    status = 503
    kind = "no_upstream"


class BadGateway(ApiError):
    status = 502
    kind = "bad_gateway"


class UpstreamTimeout(ApiError):
    status = 504
    kind = "timeout"


class Router:
    def __init__(self, settings: RouterSettings, state: RouterState, metrics: RouterMetrics) -> None:
        self.settings = settings
        self.state = state
        self.metrics = metrics
        self.pool = Pool()
        self.session: aiohttp.ClientSession | None = None  # mirror probes only: off the user's path
        self.mirror_queue: asyncio.Queue[tuple[str, bytes, Endpoint, Endpoint, dict[str, str]]] = asyncio.Queue(
            maxsize=settings.mirror_queue
        )
        self.draining = False
        self.in_flight = 0
        self.idle = asyncio.Event()
        self.idle.set()
        self._workers: list[asyncio.Task[None]] = []
        self._mirror_warned = -MIRROR_WARNING_EVERY_SECONDS

    # ---- life -------------------------------------------------------------------------------------
    async def start(self) -> None:
        self.session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60, sock_connect=2))
        self._workers = [asyncio.create_task(self._mirror_worker()) for _ in range(self.settings.mirror_workers)]

    async def serve(self, host: str, port: int) -> asyncio.Server:
        loop = asyncio.get_running_loop()
        return await loop.create_server(
            lambda: ServerProtocol(self.handle, self.settings.max_body_bytes, _send_error), host, port, backlog=2048
        )

    async def close(self) -> None:
        for worker in self._workers:
            worker.cancel()
        self.pool.close()
        if self.session is not None:
            await self.session.close()

    # ---- one request ------------------------------------------------------------------------------
    async def handle(self, request: Request, reply: Reply) -> None:
        local = LOCAL_ROUTES.get(request.path)
        if local is not None:
            await getattr(self, local)(reply)
            return
        started = time.monotonic()
        self.in_flight += 1
        self.idle.clear()
        track, revision = "none", "none"
        try:
            if self.draining:
                raise NotReady("the router is shutting down")
            self._authorize(request)
            track, revision = await self._forward(request, reply)
        except ApiError as error:
            if reply.status:
                reply.abort()
            else:
                _send_error(reply, error.status, error.message, error)
        except Exception:  # never a crashed connection without an answer
            log.exception("routing failed")
            if reply.status:
                reply.abort()
            else:
                _send_error(reply, 500, "internal router error")
        finally:
            self.metrics.request(track, revision, request.path, reply.status or 500, time.monotonic() - started)
            self.in_flight -= 1
            if self.in_flight == 0:
                self.idle.set()

    async def live(self, reply: Reply) -> None:
        reply.send(200, JSON, b'{"status": "alive"}')

    async def ready(self, reply: Reply) -> None:
        if self.draining:
            _send_error(reply, 503, "draining: the router is shutting down", NotReady(""))
        elif self.state.config is None:
            _send_error(reply, 503, "no routing config yet", NotReady(""))
        else:
            reply.send(200, JSON, json.dumps({"status": "ready", "routing": self.state.describe()}).encode())

    async def render_metrics(self, reply: Reply) -> None:
        reply.send(200, [(b"content-type", b"text/plain; version=0.0.4")], self.metrics.render())

    def _authorize(self, request: Request) -> None:
        expected = self.settings.api_key
        if not expected or not request.path.startswith("/v1/"):
            return
        check_bearer(request.header("authorization"), expected)

    async def _forward(self, request: Request, reply: Reply) -> tuple[str, str]:
        config = self.state.config
        if config is None:
            raise NoUpstream("the router has no routing config yet")
        sticky = request.header(config.sticky_header) if config.sticky_header else None
        first_choice = choose_track(config, sticky, uniform_draw())
        order = [first_choice, "canary" if first_choice == "stable" else "stable"]
        headers = request.forward_headers()
        tried: set[str] = set()
        for attempt in range(self.settings.attempts):
            endpoint, track = self._pick(order, frozenset(tried))
            if endpoint is None:
                break
            tried.add(endpoint.address)
            if attempt:
                self.metrics.retries.labels(*self.metrics.identity).inc()
            if await self._try(endpoint, request, headers, reply):
                if reply.status == 200 and config.mirror_percent and config.task == "text-generation":
                    self._maybe_mirror(request, config.mirror_percent)
                return track, endpoint.revision
            self._eject(endpoint)
        raise NoUpstream(f"no pod answered ({self.state.describe()}; tried {len(tried)})")

    async def _try(self, endpoint: Endpoint, request: Request, headers: Headers, reply: Reply) -> bool:
        """Send to one pod and relay its answer; False when the pod refused, so another may be tried."""
        try:
            connection = await self.pool.acquire(endpoint.address)
        except (OSError, TimeoutError):
            return False
        # A timer rather than asyncio.timeout(): it costs less on every request, and on expiry dropping
        # the connection is the right thing to do anyway.
        timer = asyncio.get_running_loop().call_later(self.settings.upstream_timeout_seconds, connection.expire)
        try:
            head = await connection.request(request.method, request.target, endpoint.address, headers, request.body)
            relayed = with_revision(head.headers, endpoint.revision)
            if head.status == 503:
                data = await connection.read()
                self.pool.release(endpoint.address, connection, head.keep_alive)
                if _draining(data):
                    return False
                reply.send(503, relayed, data)
                return True
            if (head.header("content-type") or "").startswith("text/event-stream"):
                reply.start(head.status, relayed)
                async for chunk in connection.body():
                    reply.write(chunk)
                reply.end()
            else:
                reply.send(head.status, relayed, await connection.read())
            self.pool.release(endpoint.address, connection, head.keep_alive)
            return True
        except UpstreamClosed:
            connection.close()
            if connection.timed_out:
                raise UpstreamTimeout(f"revision {endpoint.revision} did not answer in time") from None
            if reply.status:  # the answer had started: it cannot be sent again
                raise BadGateway(f"revision {endpoint.revision} broke off its answer") from None
            return False
        finally:
            timer.cancel()

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

    # ---- mirroring --------------------------------------------------------------------------------
    def _maybe_mirror(self, request: Request, percent: float) -> None:
        if request.path not in MIRRORED_PATHS or random.random() * 100 >= percent:
            return
        stable_pool, _ = self.state.pool("stable")
        canary_pool, _ = self.state.pool("canary")
        stable = stable_pool.pick() if stable_pool else None
        canary = canary_pool.pick() if canary_pool else None
        if stable is None or canary is None:
            return
        auth = {"Authorization": value} if (value := request.header("authorization")) else {}
        try:
            self.mirror_queue.put_nowait((request.path, request.body, stable, canary, auth))
        except asyncio.QueueFull:
            self.metrics.mirror_dropped.labels(*self.metrics.identity).inc()

    async def _mirror_worker(self) -> None:
        while True:
            path, body, stable, canary, auth = await self.mirror_queue.get()
            try:
                await self._compare(path, body, stable, canary, auth)
            except Exception as error:  # a comparison must never take the worker down
                self._mirror_failed(f"{type(error).__name__}: {error}")

    async def _compare(self, path: str, body: bytes, stable: Endpoint, canary: Endpoint, auth: dict[str, str]) -> None:
        probe = probe_request(path, json.loads(body), self.settings.divergence_tokens, self.settings.divergence_top_k)
        answers = await asyncio.gather(*(self._probe(e, path, probe, auth) for e in (stable, canary)))
        divergence = mean_divergence(top_tokens(answers[0]), top_tokens(answers[1]))
        if divergence is None:
            self._mirror_failed("an answer carried no token logprobs to compare")
            return
        self.metrics.divergence.labels(*self.metrics.identity, canary.revision).observe(divergence)

    def _mirror_failed(self, why: str) -> None:
        """Counted always; logged at most once a minute, since drift without comparisons cannot be judged."""
        self.metrics.mirror_errors.labels(*self.metrics.identity).inc()
        now = time.monotonic()
        if now - self._mirror_warned >= MIRROR_WARNING_EVERY_SECONDS:
            self._mirror_warned = now
            log.warning("mirror comparison failed (counted in modelship_router_mirror_errors_total): %s", why)

    async def _probe(self, endpoint: Endpoint, path: str, probe: dict[str, Any], auth: dict[str, str]) -> Any:
        assert self.session is not None
        async with self.session.post(
            f"http://{endpoint.address}{path}", json=probe, headers={**auth, MIRROR_HEADER: "1"}
        ) as response:
            response.raise_for_status()
            return await response.json()


_REVISION = REVISION_HEADER.encode()


def with_revision(headers: Headers, revision: str) -> Headers:
    """An upstream's headers, saying which revision answered as the router knows it: any server's answer
    carries it, not only ModelShip's runtime's (a vLLM or custom pod knows no revision)."""
    return [(key, value) for key, value in headers if key.lower() != _REVISION] + [(_REVISION, revision.encode())]


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
            "ignore_eos": True,
        }
    return {
        "model": original["model"],
        "prompt": original["prompt"],
        "max_tokens": tokens,
        "temperature": 0.0,
        "logprobs": top_k,
        "ignore_eos": True,
    }


def _draining(body: bytes) -> bool:
    """A 503 that means "not taking requests" (the request was not processed), not an answer to relay."""
    try:
        document = json.loads(body)
    except ValueError:
        return False
    return (
        isinstance(document, dict)
        and isinstance(document.get("error"), dict)
        and document["error"].get("type") == "not_ready"
    )


ERRORS_BY_STATUS: dict[int, type[ApiError]] = {400: InvalidRequest, 413: BodyTooLarge, 503: NotReady}


def _send_error(reply: Reply, status: int, message: str, error: ApiError | None = None) -> None:
    failure = error or ERRORS_BY_STATUS.get(status, ApiError)(message)
    failure.status = status
    body = failure.body()
    body["error"]["message"] = message
    reply.send(status, JSON, json.dumps(body).encode())
