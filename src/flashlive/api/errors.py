"""The one place typed errors meet the wire: each kind's HTTP status, google.rpc status name
and WebSocket close code, and the Gemini error body built from them."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

from starlette.responses import JSONResponse

from flashlive.errors import (
    DeadlineExceeded,
    FailedPrecondition,
    FailedStart,
    FlashliveError,
    Internal,
    InvalidArgument,
    NotFound,
    PayloadTooLarge,
    PermissionDenied,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WireStatus:
    http: int
    rpc: str
    close: int


# Close codes (RFC 6455 §7.4.1): a bad payload is 1007, a message the session's state or policy
# forbids is 1008, an oversize frame 1009, an overloaded server 1013, anything else 1011. A
# connection that reached its time limit closes normally (1000): the client resumes.
_STATUS: dict[type[FlashliveError], WireStatus] = {
    InvalidArgument: WireStatus(400, "INVALID_ARGUMENT", 1007),
    FailedPrecondition: WireStatus(400, "FAILED_PRECONDITION", 1008),
    Unauthenticated: WireStatus(401, "UNAUTHENTICATED", 1008),
    PermissionDenied: WireStatus(403, "PERMISSION_DENIED", 1008),
    NotFound: WireStatus(404, "NOT_FOUND", 1008),
    PayloadTooLarge: WireStatus(413, "INVALID_ARGUMENT", 1009),
    ResourceExhausted: WireStatus(429, "RESOURCE_EXHAUSTED", 1013),
    Internal: WireStatus(500, "INTERNAL", 1011),
    Unavailable: WireStatus(503, "UNAVAILABLE", 1013),
    DeadlineExceeded: WireStatus(504, "DEADLINE_EXCEEDED", 1000),
    FailedStart: WireStatus(500, "INTERNAL", 1011),  # raised before any client is served
}
_UNEXPECTED = _STATUS[Internal]
MAX_CLOSE_REASON_BYTES = 123  # the close frame's payload limit, less its 2-byte code


def wire_status(exc: BaseException) -> WireStatus:
    """The statuses of `exc`'s kind (its nearest listed base); an unexpected error is INTERNAL."""
    for kind in type(exc).__mro__:
        if (found := _STATUS.get(kind)) is not None:
            return found
    return _UNEXPECTED


def http_status(exc: BaseException) -> int:
    return wire_status(exc).http


def error_body(exc: FlashliveError) -> dict[str, Any]:
    status = wire_status(exc)
    return {"error": {"code": status.http, "message": exc.message, "status": status.rpc}}


def error_response(exc: BaseException) -> JSONResponse:
    if not isinstance(exc, FlashliveError):
        log.error("unhandled error", exc_info=exc)
        exc = Internal("internal error; the server log has the details")
    headers = {}
    if exc.retry_after_s is not None:
        headers["Retry-After"] = str(max(1, round(exc.retry_after_s)))
    return JSONResponse(error_body(exc), status_code=http_status(exc), headers=headers)


def stream_error(exc: BaseException, response_id: str) -> bytes:
    """The error that ends a stream already under way, as the stream's last element.

    The status line (200) has left by then, so the error travels in the body, as Gemini sends
    it: an `{"error": ...}` element the SDKs raise on. Every such end is logged here.
    """
    if isinstance(exc, FlashliveError):
        log.warning("stream %s ended early: %s %s", response_id, wire_status(exc).rpc, exc.message)
    else:
        log.error("stream %s failed", response_id, exc_info=exc)
        exc = Internal("internal error; the server log has the details")
    return json.dumps(error_body(exc)).encode()


def close_code(exc: BaseException) -> int:
    return wire_status(exc).close


def close_reason(exc: BaseException) -> str:
    """The human-readable reason, cut to what a close frame can carry."""
    if not isinstance(exc, FlashliveError):
        log.error("unhandled error in a Live session", exc_info=exc)
        return "internal error; the server log has the details"
    raw = exc.message.encode()
    if len(raw) <= MAX_CLOSE_REASON_BYTES:
        return exc.message
    return raw[: MAX_CLOSE_REASON_BYTES - 3].decode(errors="ignore") + "..."
