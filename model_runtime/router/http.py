"""A lean HTTP/1.1 layer for the router's hot path, on asyncio protocols and the llhttp parser
(httptools), because a general-purpose framework costs about 0.8 ms of CPU per proxied request here,
which queues at a few hundred requests per second on two cores.

Server side: keep-alive client connections, requests handled one at a time per connection (HTTP/1.1 has
no multiplexing), bodies bounded. Upstream side: a pool of keep-alive connections per pod address; a
response is read head first, then its body whole or chunk by chunk (server-sent events stream through).
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import cast

import httptools

from model_runtime.contract import MIRROR_HEADER, VALIDATION_HEADER

HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"te",
        b"trailers",
        b"transfer-encoding",
        b"upgrade",
        b"host",
        b"content-length",
    }
)
# What only ModelShip itself may say about a request: a client's copy is dropped on the way through.
_INTERNAL = frozenset({MIRROR_HEADER.encode(), VALIDATION_HEADER.encode()})
REASONS = {
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    404: "Not Found",
    413: "Payload Too Large",
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}
Headers = list[tuple[bytes, bytes]]


@dataclass
class Request:
    method: str
    target: str  # path and query, as sent
    headers: Headers
    body: bytes = b""

    @property
    def path(self) -> str:
        return self.target.split("?", 1)[0]

    def header(self, name: str) -> str | None:
        wanted = name.lower().encode()
        for key, value in self.headers:
            if key.lower() == wanted:
                return value.decode("latin-1")
        return None

    def forward_headers(self) -> Headers:
        """The client's headers minus hop-by-hop ones, and minus the mirror mark: only the router's own
        probes may keep themselves out of the SLIs."""
        return [(k, v) for k, v in self.headers if k.lower() not in HOP_BY_HOP and k.lower() not in _INTERNAL]


class Reply:
    """What a handler writes to the client: a whole response, or a streamed (chunked) one."""

    def __init__(self, transport: asyncio.Transport, keep_alive: bool) -> None:
        self.transport = transport
        self.keep_alive = keep_alive
        self.status = 0
        self._streaming = False

    def _head(self, status: int, headers: Headers, extra: bytes) -> bytes:
        lines = [f"HTTP/1.1 {status} {REASONS.get(status, 'Status')}\r\n".encode()]
        lines += [key + b": " + value + b"\r\n" for key, value in headers if key.lower() not in HOP_BY_HOP]
        lines.append(extra)
        if not self.keep_alive:
            lines.append(b"connection: close\r\n")
        lines.append(b"\r\n")
        return b"".join(lines)

    def send(self, status: int, headers: Headers, body: bytes) -> None:
        self.status = status
        self.transport.write(self._head(status, headers, b"content-length: %d\r\n" % len(body)) + body)

    def start(self, status: int, headers: Headers) -> None:
        self.status, self._streaming = status, True
        self.transport.write(self._head(status, headers, b"transfer-encoding: chunked\r\n"))

    def write(self, chunk: bytes) -> None:
        if chunk:
            self.transport.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))

    def end(self) -> None:
        if self._streaming:
            self.transport.write(b"0\r\n\r\n")

    def abort(self) -> None:
        """An answer that broke off after it started cannot be fixed up: close the connection, so the
        client sees a truncated response instead of waiting for the rest."""
        self.keep_alive = False
        self.status = 502  # what the request counts as in the metrics
        self.transport.close()


Handler = Callable[[Request, Reply], Awaitable[None]]


class TooLarge(Exception):
    pass


class ServerProtocol(asyncio.Protocol):
    """One client connection."""

    def __init__(self, handler: Handler, max_body: int, on_error: Callable[[Reply, int, str], None]) -> None:
        self.handler, self.max_body, self.on_error = handler, max_body, on_error
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.queue: collections.deque[tuple[Request, bool]] = collections.deque()
        self.busy = False
        self._url = b""
        self._headers: Headers = []
        self._body: list[bytes] = []
        self._size = 0
        self._too_large = False

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports do not subclass it

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as error:
            # An exception raised in a callback (TooLarge) reaches here wrapped in a parser error.
            if self._too_large:
                self._fail(413, f"the request body is over {self.max_body} bytes")
            else:
                self._fail(400, f"malformed HTTP request: {error}")

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None

    # httptools callbacks
    def on_message_begin(self) -> None:
        self._url, self._headers, self._body, self._size = b"", [], [], 0

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name, value))

    def on_headers_complete(self) -> None:
        for key, value in self._headers:
            if key.lower() == b"content-length" and value.isdigit() and int(value) > self.max_body:
                self._too_large = True
                raise TooLarge

    def on_body(self, body: bytes) -> None:
        self._size += len(body)
        if self._size > self.max_body:
            self._too_large = True
            raise TooLarge
        self._body.append(body)

    def on_message_complete(self) -> None:
        method = self.parser.get_method().decode()
        request = Request(method, self._url.decode("latin-1"), self._headers, b"".join(self._body))
        self.queue.append((request, self.parser.should_keep_alive()))
        if not self.busy:
            self.busy = True
            asyncio.get_running_loop().create_task(self._serve())

    async def _serve(self) -> None:
        try:
            while self.queue and self.transport is not None:
                request, keep_alive = self.queue.popleft()
                reply = Reply(self.transport, keep_alive)
                await self.handler(request, reply)
                if not keep_alive and self.transport is not None:
                    self.transport.close()
        finally:
            self.busy = False

    def _fail(self, status: int, message: str) -> None:
        if self.transport is not None:
            self.on_error(Reply(self.transport, keep_alive=False), status, message)
            self.transport.close()


class UpstreamClosed(ConnectionError):
    """The upstream closed the connection before a complete response head."""


@dataclass
class UpstreamResponse:
    status: int
    headers: Headers
    keep_alive: bool

    def header(self, name: str) -> str | None:
        wanted = name.lower().encode()
        return next((v.decode("latin-1") for k, v in self.headers if k.lower() == wanted), None)


class UpstreamProtocol(asyncio.Protocol):
    """One keep-alive connection to a pod; one request at a time. Body bytes are buffered and a waiter is
    woken when more arrive (cheaper per response than an asyncio.Queue)."""

    def __init__(self) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.head: asyncio.Future[UpstreamResponse] | None = None
        self.complete = False
        self.closed = False
        self.timed_out = False
        self._headers: Headers = []
        self._buffer: list[bytes] = []
        self._waiter: asyncio.Future[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports do not subclass it

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.head is not None and not self.head.done():
            self.head.set_exception(UpstreamClosed("the upstream closed the connection"))
        self._wake()

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as error:
            if self.head is not None and not self.head.done():
                self.head.set_exception(UpstreamClosed(f"malformed response: {error}"))
            self.close()

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name, value))

    def on_headers_complete(self) -> None:
        if self.head is not None and not self.head.done():
            self.head.set_result(
                UpstreamResponse(self.parser.get_status_code(), self._headers, self.parser.should_keep_alive())
            )

    def on_body(self, body: bytes) -> None:
        self._buffer.append(body)
        self._wake()

    def on_message_complete(self) -> None:
        self.complete = True
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def expire(self) -> None:
        """The request's time is up: drop the connection; the waiting request sees why."""
        self.timed_out = True
        self.close()

    async def request(self, method: str, target: str, host: str, headers: Headers, body: bytes) -> UpstreamResponse:
        assert self.transport is not None
        self.head = asyncio.get_running_loop().create_future()
        self._headers, self._buffer, self.complete = [], [], False
        lines = [f"{method} {target} HTTP/1.1\r\nhost: {host}\r\n".encode()]
        lines += [key + b": " + value + b"\r\n" for key, value in headers]
        lines.append(b"content-length: %d\r\n\r\n" % len(body))
        self.transport.write(b"".join(lines) + body)
        return await self.head

    async def body(self) -> AsyncIterator[bytes]:
        while True:
            if self._buffer:
                chunk = b"".join(self._buffer)
                self._buffer = []
                yield chunk
                continue
            if self.complete:
                return
            if self.closed:
                raise UpstreamClosed("the upstream closed the connection mid-response")
            self._waiter = asyncio.get_running_loop().create_future()
            await self._waiter
            self._waiter = None

    async def read(self) -> bytes:
        return b"".join([chunk async for chunk in self.body()])


@dataclass
class Pool:
    """Idle keep-alive connections per pod address."""

    connect_timeout: float = 2.0
    idle: dict[str, collections.deque[UpstreamProtocol]] = field(default_factory=dict)

    async def acquire(self, address: str) -> UpstreamProtocol:
        connections = self.idle.get(address)
        while connections:
            connection = connections.pop()
            if not connection.closed:
                return connection
        host, port = address.rsplit(":", 1)
        loop = asyncio.get_running_loop()
        _, protocol = await asyncio.wait_for(
            loop.create_connection(UpstreamProtocol, host, int(port)), self.connect_timeout
        )
        return protocol

    def release(self, address: str, connection: UpstreamProtocol, reusable: bool) -> None:
        if reusable and connection.complete and not connection.closed:
            self.idle.setdefault(address, collections.deque()).append(connection)
        elif connection.transport is not None:
            connection.transport.close()

    def close(self) -> None:
        for connections in self.idle.values():
            for connection in connections:
                if connection.transport is not None:
                    connection.transport.close()
        self.idle.clear()
