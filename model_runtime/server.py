"""HTTP routes (aiohttp) over the dataplane: parse JSON, check the API key, map every error to the one
JSON error shape, stream server-sent events, and time every request. Prompts are never logged."""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import Any

from aiohttp import web

from . import openapi
from .contract import (
    CLIENT_CLOSED_REQUEST,
    ENDPOINT_OF_PATH,
    MIRROR_HEADER,
    REVISION_HEADER,
    SOURCE_MIRROR,
    SOURCE_USER,
    SOURCE_VALIDATION,
    VALIDATION_HEADER,
)
from .dataplane import DataPlane
from .errors import (
    ApiError,
    BodyTooLarge,
    ClientDisconnected,
    InvalidRequest,
    MethodNotAllowed,
    NotFound,
    NotReady,
    check_bearer,
)
from .metrics import REQUEST_SOURCE

log = logging.getLogger("model_runtime.http")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def error_response(error: ApiError, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response(error.body(), status=error.status, headers={**(headers or {}), **error.headers()})


def _http_error(error: web.HTTPException) -> ApiError:
    if isinstance(error, web.HTTPRequestEntityTooLarge):
        return BodyTooLarge(
            f"the request body is over the limit of {error.max_size} bytes"
            if hasattr(error, "max_size")
            else "the request body is too large"
        )
    if isinstance(error, web.HTTPMethodNotAllowed):
        return MethodNotAllowed(f"method {error.method} is not allowed here")
    if isinstance(error, web.HTTPNotFound):
        return NotFound("no such endpoint")
    failure = ApiError(error.reason or "error")
    failure.status = error.status
    return failure


def _not_json(constant: str) -> Any:
    raise ValueError(f"{constant} is not a JSON number")


def parse_json(body: bytes) -> Any:
    """A request body as JSON, or InvalidRequest: not UTF-8 or not JSON, nested deeper than the parser
    recurses, an integer of more digits than Python parses, NaN or Infinity (Python's extension, which
    would reach sampling as a non-finite parameter), or text with a lone surrogate (which no
    tokenizer can encode)."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as error:
        raise InvalidRequest(f"the request body is not UTF-8: {error}") from None
    try:
        document = json.loads(text, parse_constant=_not_json)
    except RecursionError:
        raise InvalidRequest("the request body nests JSON too deeply") from None
    except ValueError as error:  # JSONDecodeError, and an integer over the digit limit
        raise InvalidRequest(f"the request body is not valid JSON: {error}") from None
    try:
        json.dumps(document, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidRequest("the request body has a lone surrogate (\\ud800-\\udfff) in a string") from None
    except RecursionError:
        raise InvalidRequest("the request body nests JSON too deeply") from None
    return document


class Server:
    def __init__(self, dataplane: DataPlane) -> None:
        self.dataplane = dataplane
        self.settings = dataplane.settings
        self.identity = {REVISION_HEADER: self.settings.revision or "unknown"}

    def app(self) -> web.Application:
        app = web.Application(client_max_size=self.settings.max_body_bytes, middlewares=[self.middleware])
        app.router.add_post("/v1/completions", self.completions)
        app.router.add_post("/v1/chat/completions", self.chat)
        app.router.add_post("/v1/embeddings", self.embeddings)
        app.router.add_get("/v1/models", self.models)
        app.router.add_post("/tokenize", self.tokenize)
        app.router.add_get("/health/live", self.live)
        app.router.add_get("/health/ready", self.ready)
        app.router.add_get("/metrics", self.metrics)
        app.router.add_get("/openapi.json", self.openapi)
        return app

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        started = time.monotonic()
        request_id = request.headers.get("x-request-id") or uuid.uuid4().hex
        headers = {**self.identity, "x-request-id": request_id}
        endpoint = ENDPOINT_OF_PATH.get(request.path)
        # The router's mirror probes and the operator's golden prompts are not user traffic: their own
        # series, out of the analysis' SLIs.
        source = (
            SOURCE_VALIDATION
            if request.headers.get(VALIDATION_HEADER)
            else SOURCE_MIRROR
            if request.headers.get(MIRROR_HEADER)
            else SOURCE_USER
        )
        REQUEST_SOURCE.set(source)  # this request's own task: its context is its own
        status = 500
        try:
            if endpoint:  # /v1/models and /tokenize too, as vLLM guards them
                check_bearer(request.headers.get("Authorization"), self.settings.api_key)
            response = await handler(request)
            status = response.status
            if not response.prepared:
                response.headers.update(headers)
            return response
        except ClientDisconnected:
            status = CLIENT_CLOSED_REQUEST
            raise
        except asyncio.CancelledError:
            # aiohttp cancels the handler when the client drops the connection (handler_cancellation):
            # the generation is cancelled with it (the dataplane's finally), and it is no server error.
            status = CLIENT_CLOSED_REQUEST
            raise
        except ApiError as error:
            status = error.status
            return error_response(error, headers)
        except web.HTTPException as error:
            failure = _http_error(error)
            status = failure.status
            return error_response(failure, headers)
        except Exception:
            log.exception("request %s failed", request_id)
            return error_response(ApiError("internal error"), headers)
        finally:
            elapsed = time.monotonic() - started
            if endpoint:
                self.dataplane.metrics.request(endpoint, status, elapsed, source)
                log.info("%s %s %d %.3fs id=%s", request.method, request.path, status, elapsed, request_id)

    async def _json(self, request: web.Request) -> Any:
        body = await request.read()
        if not body:
            raise InvalidRequest("the request body is empty; send a JSON object")
        return parse_json(body)

    async def _stream(self, request: web.Request, chunks: AsyncGenerator[dict[str, Any], None]) -> web.StreamResponse:
        """Server-sent events; an error after the first byte becomes an `error` event, then [DONE]."""
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache", **self.identity}
        )
        first = await anext(chunks)  # errors before any output still get their status code
        try:
            await response.prepare(request)
            await response.write(f"data: {json.dumps(first)}\n\n".encode())
            try:
                async for chunk in chunks:
                    await response.write(f"data: {json.dumps(chunk)}\n\n".encode())
            except ApiError as error:
                await response.write(f"data: {json.dumps(error.body())}\n\n".encode())
            await response.write(b"data: [DONE]\n\n")
            await response.write_eof()
        except ConnectionError:  # aiohttp's ClientConnectionResetError is one: the client hung up
            await chunks.aclose()  # the dataplane's finally cancels the sequence in the engine
            raise ClientDisconnected("the client closed the connection mid-stream") from None
        return response

    # Preparing a request (tokenizing it, compiling a JSON-mode grammar) runs off the event loop, so one
    # request's large prompt or schema never stalls the others.
    async def completions(self, request: web.Request) -> web.StreamResponse:
        document = await self._json(request)
        with self.dataplane.admission.admitted():
            parsed, choices, params = await asyncio.to_thread(self.dataplane.prepare_completion, document)
            if parsed.stream:
                return await self._stream(request, self.dataplane.completion_stream(parsed, choices, params))
            return web.json_response(await self.dataplane.completion(parsed, choices, params))

    async def chat(self, request: web.Request) -> web.StreamResponse:
        document = await self._json(request)
        with self.dataplane.admission.admitted():
            parsed, choices, params = await asyncio.to_thread(self.dataplane.prepare_chat, document)
            if parsed.stream:
                return await self._stream(request, self.dataplane.chat_stream(parsed, choices, params))
            return web.json_response(await self.dataplane.chat(parsed, choices, params))

    async def embeddings(self, request: web.Request) -> web.StreamResponse:
        document = await self._json(request)
        with self.dataplane.admission.admitted():
            return web.json_response(await self.dataplane.embeddings(document))

    async def tokenize(self, request: web.Request) -> web.StreamResponse:
        document = await self._json(request)
        return web.json_response(await asyncio.to_thread(self.dataplane.tokenize, document))

    async def models(self, request: web.Request) -> web.StreamResponse:
        return web.json_response(self.dataplane.models())

    async def live(self, request: web.Request) -> web.StreamResponse:
        engine = self.dataplane.engine
        if engine is not None and not engine.alive:
            return error_response(ApiError("the engine thread has stopped"))
        return web.json_response({"status": "alive"})

    async def ready(self, request: web.Request) -> web.StreamResponse:
        admission = self.dataplane.admission
        if admission.draining:
            return error_response(NotReady("draining: the server is shutting down"))
        if not admission.ready:
            return error_response(NotReady("loading: the model is not loaded and warmed up yet"))
        return web.json_response({"status": "ready"})

    async def openapi(self, request: web.Request) -> web.StreamResponse:
        return web.json_response(
            openapi.document(with_api_key=bool(self.settings.api_key), model_name=self.settings.model_name)
        )

    async def metrics(self, request: web.Request) -> web.StreamResponse:
        return web.Response(
            body=self.dataplane.metrics.render(), headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"}
        )
