"""Typed errors raised inside flashlive; `api/` maps them to the Gemini error shape.

Each error carries the canonical Google RPC status name and its HTTP code, so the
mapping at the edge is a lookup, never a guess.
"""

from __future__ import annotations

from pydantic import ValidationError


class FlashliveError(Exception):
    """Base class: an error that should reach the client as a Gemini error body."""

    http_status = 500
    rpc_status = "INTERNAL"

    def __init__(self, message: str, *, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after_s = retry_after_s


class InvalidArgument(FlashliveError):
    http_status = 400
    rpc_status = "INVALID_ARGUMENT"


class FailedPrecondition(FlashliveError):
    http_status = 400
    rpc_status = "FAILED_PRECONDITION"


class Unauthenticated(FlashliveError):
    http_status = 401
    rpc_status = "UNAUTHENTICATED"


class PermissionDenied(FlashliveError):
    http_status = 403
    rpc_status = "PERMISSION_DENIED"


class NotFound(FlashliveError):
    http_status = 404
    rpc_status = "NOT_FOUND"


class PayloadTooLarge(FlashliveError):
    http_status = 413
    rpc_status = "INVALID_ARGUMENT"


class ResourceExhausted(FlashliveError):
    http_status = 429
    rpc_status = "RESOURCE_EXHAUSTED"


class Internal(FlashliveError):
    http_status = 500
    rpc_status = "INTERNAL"


class Unavailable(FlashliveError):
    http_status = 503
    rpc_status = "UNAVAILABLE"


class DeadlineExceeded(FlashliveError):
    """A time limit ran out: a Live connection's maximum duration, say. Nothing was wrong."""

    http_status = 504
    rpc_status = "DEADLINE_EXCEEDED"


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
