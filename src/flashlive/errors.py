"""Typed errors raised inside flashlive. Each kind says what went wrong, in the terms of
google.rpc's canonical codes; `api/errors.py` alone maps a kind to an HTTP status, an RPC
status name and a WebSocket close code.
"""

from __future__ import annotations

from pydantic import ValidationError


class FlashliveError(Exception):
    """Base class: an error that should reach the client as a Gemini error body."""

    def __init__(self, message: str, *, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after_s = retry_after_s


class InvalidArgument(FlashliveError):
    """The request itself is wrong: a bad field, value or payload."""


class FailedPrecondition(FlashliveError):
    """The request is well formed but the state it meets refuses it."""


class Unauthenticated(FlashliveError):
    """No credential, or one that is not known."""


class PermissionDenied(FlashliveError):
    """A known credential that may not do this."""


class NotFound(FlashliveError):
    """The named model, cache or session does not exist (for this caller)."""


class PayloadTooLarge(FlashliveError):
    """A body or frame over the server's size limit."""


class ResourceExhausted(FlashliveError):
    """A quota or a queue is full; `retry_after_s` says when to try again."""


class Internal(FlashliveError):
    """A fault of the server's own."""


class Unavailable(FlashliveError):
    """A component cannot serve now (a model that did not load, a store that is down)."""


class DeadlineExceeded(FlashliveError):
    """A time limit ran out: a Live connection's maximum duration, say. Nothing was wrong."""


class FailedStart(FlashliveError):
    """The server's own settings or components cannot work: raised before it listens, never
    sent to a client; `flashlive serve` prints the message and exits."""


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
