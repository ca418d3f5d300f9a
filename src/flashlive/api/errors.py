"""The one place typed errors become the Gemini error body and an HTTP status."""

from __future__ import annotations

import json
import logging
from typing import Any

from starlette.responses import JSONResponse

from flashlive.errors import (
    DeadlineExceeded,
    FailedPrecondition,
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


def error_body(exc: FlashliveError) -> dict[str, Any]:
    return {"error": {"code": exc.http_status, "message": exc.message, "status": exc.rpc_status}}


def error_response(exc: BaseException) -> JSONResponse:
    if not isinstance(exc, FlashliveError):
        log.error("unhandled error", exc_info=exc)
        exc = Internal("internal error; the server log has the details")
    headers = {}
    if exc.retry_after_s is not None:
        headers["Retry-After"] = str(max(1, round(exc.retry_after_s)))
    return JSONResponse(error_body(exc), status_code=exc.http_status, headers=headers)


def stream_error(exc: BaseException, response_id: str) -> bytes:
    """The error that ends a stream already under way, as the stream's last element.

    The status line (200) has left by then, so the error travels in the body, as Gemini sends
    it: an `{"error": ...}` element the SDKs raise on. Every such end is logged here.
    """
    if isinstance(exc, FlashliveError):
        log.warning("stream %s ended early: %s %s", response_id, exc.rpc_status, exc.message)
    else:
        log.error("stream %s failed", response_id, exc_info=exc)
        exc = Internal("internal error; the server log has the details")
    return json.dumps(error_body(exc)).encode()


# WebSocket close codes (RFC 6455 §7.4.1): a bad payload is 1007, a message the session's state or
# policy forbids is 1008, an oversize frame 1009, an overloaded server 1013, anything else 1011.
# A connection that reached its time limit closes normally (1000): the client resumes.
_CLOSE_CODES: tuple[tuple[type[FlashliveError], int], ...] = (
    (DeadlineExceeded, 1000),
    (PayloadTooLarge, 1009),
    (InvalidArgument, 1007),
    (FailedPrecondition, 1008),
    (Unauthenticated, 1008),
    (PermissionDenied, 1008),
    (NotFound, 1008),
    (ResourceExhausted, 1013),
    (Unavailable, 1013),
)
MAX_CLOSE_REASON_BYTES = 123  # the close frame's payload limit, less its 2-byte code


def close_code(exc: BaseException) -> int:
    for kind, code in _CLOSE_CODES:
        if isinstance(exc, kind):
            return code
    return 1011


def close_reason(exc: BaseException) -> str:
    """The human-readable reason, cut to what a close frame can carry."""
    if not isinstance(exc, FlashliveError):
        log.error("unhandled error in a Live session", exc_info=exc)
        return "internal error; the server log has the details"
    raw = exc.message.encode()
    if len(raw) <= MAX_CLOSE_REASON_BYTES:
        return exc.message
    return raw[: MAX_CLOSE_REASON_BYTES - 3].decode(errors="ignore") + "..."
