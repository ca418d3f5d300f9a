"""The one place typed errors become the Gemini error body and an HTTP status."""

from __future__ import annotations

import json
import logging
from typing import Any

from pydantic import ValidationError
from starlette.responses import JSONResponse

from flashlive.errors import FlashliveError, Internal, InvalidArgument

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


def sse_error(exc: BaseException) -> bytes:
    if not isinstance(exc, FlashliveError):
        log.error("unhandled error while streaming", exc_info=exc)
        exc = Internal("internal error; the server log has the details")
    return b"data: " + json.dumps(error_body(exc)).encode() + b"\r\n\r\n"


def invalid_from_validation(exc: ValidationError) -> InvalidArgument:
    """A pydantic error list → one readable INVALID_ARGUMENT, paths in wire (camelCase) names."""
    lines = []
    for err in exc.errors(include_url=False)[:5]:
        path = ".".join(str(p) for p in err["loc"])
        if err["type"] == "extra_forbidden":
            parent, _, field = path.rpartition(".")
            where = f" at '{parent}'" if parent else ""
            lines.append(f'Unknown name "{field}"{where}: Cannot find field.')
        else:
            lines.append(f"{path or 'request'}: {err['msg']}")
    return InvalidArgument("Invalid JSON payload received. " + " ".join(lines))
