"""One error shape for every client-facing failure, and the one place that maps errors to HTTP codes."""

from __future__ import annotations

import hmac
from typing import Any

from .contract import CLIENT_CLOSED_REQUEST


class ApiError(Exception):
    """A request the runtime refuses or cannot finish; becomes `{"error": {...}}` with `status`."""

    status = 500
    kind = "internal_error"
    retry_after: int | None = None  # seconds, sent as Retry-After: the client may try again then

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after)} if self.retry_after is not None else {}

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code

    def body(self) -> dict[str, Any]:
        return {
            "error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code or self.kind}
        }


class InvalidRequest(ApiError):
    """Malformed JSON, bad parameter values, or a prompt over the token limit."""

    status = 400
    kind = "invalid_request_error"


class Unauthorized(ApiError):
    status = 401
    kind = "authentication_error"


class ModelNotFound(ApiError):
    status = 404
    kind = "model_not_found"


class NotFound(ApiError):
    status = 404
    kind = "not_found"


class MethodNotAllowed(ApiError):
    status = 405
    kind = "method_not_allowed"


class BodyTooLarge(ApiError):
    status = 413
    kind = "request_too_large"


class UnsupportedMediaType(ApiError):
    status = 415
    kind = "unsupported_media_type"


class SchemaError(ApiError):
    """The JSON parsed but does not fit the endpoint's schema (types, missing or unknown fields)."""

    status = 422
    kind = "schema_error"


class ClientDisconnected(ApiError):
    """The client hung up before the answer was complete: recorded as 499 (nginx's convention), not an
    error of the server; its sequence is cancelled."""

    status = CLIENT_CLOSED_REQUEST
    kind = "client_closed_request"


class QueueFull(ApiError):
    status = 429
    kind = "queue_full"
    retry_after = 1


class InjectedFault(ApiError):
    """Returned only when fault injection is enabled (tests of the rollout engine)."""

    status = 500
    kind = "injected_fault"


class NotReady(ApiError):
    status = 503
    kind = "not_ready"
    retry_after = 5


class Timeout(ApiError):
    status = 504
    kind = "timeout"


def check_bearer(authorization: str | None, expected: str | None) -> None:
    """The API key check the runtime and the router share: `Authorization: Bearer <key>` (the scheme in
    any case, as RFC 7235 has it), compared in constant time; nothing to check when no key is set."""
    if not expected:
        return
    scheme, _, token = (authorization or "").strip().partition(" ")
    given = token.strip() if scheme.lower() == "bearer" else ""
    if not hmac.compare_digest(given.encode(), expected.encode()):
        raise Unauthorized("a valid API key is required: send Authorization: Bearer <key>")
