"""Log lines that say whose work they are part of.

The request id of a REST call, or the id of a Live session, is set once where the work starts
(`api/`) and kept in a context variable: every line logged while serving it carries the id,
those of the engine and of perception included, however deep the call. Worker threads run
their jobs in the submitter's context (`in_context`), so their lines carry it too.

`--log-format json` writes each line as one JSON object, for log shippers.
"""

from __future__ import annotations

import contextvars
import json
import logging
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Literal, TypeVar

T = TypeVar("T")
LogFormat = Literal["text", "json"]

_request: contextvars.ContextVar[str | None] = contextvars.ContextVar("request", default=None)
_session: contextvars.ContextVar[str | None] = contextvars.ContextVar("session", default=None)
_caller: contextvars.ContextVar[str | None] = contextvars.ContextVar("caller", default=None)

TEXT_FORMAT = "%(levelname)s %(name)s%(context)s: %(message)s"


@contextmanager
def serving(
    *, request: str | None = None, session: str | None = None, caller: str | None = None
) -> Iterator[None]:
    """Within the block, log lines carry `request` or `session`; `caller` names who is served
    (a key's hash, say) for fair queues. Nested blocks add to the outer one."""
    tokens = [
        (var, var.set(value))
        for var, value in ((_request, request), (_session, session), (_caller, caller))
        if value is not None
    ]
    try:
        yield
    finally:
        for var, token in reversed(tokens):
            var.reset(token)


def current_request() -> str | None:
    """The id of the HTTP request being served, if any."""
    return _request.get()


def current_caller(default: str) -> str:
    """Who the work in hand is for: a fair queue's client id."""
    return _caller.get() or _session.get() or _request.get() or default


def in_context(fn: Callable[..., T], *args: Any) -> Callable[[], T]:
    """`fn(*args)` bound to the caller's context, to run on another thread."""
    context = contextvars.copy_context()
    return lambda: context.run(fn, *args)


class ContextFilter(logging.Filter):
    """Adds `request_id`, `session_id` and `context` (" [request X]", or "") to each record."""

    def filter(self, record: logging.LogRecord) -> bool:
        request, session = _request.get(), _session.get()
        record.request_id = request
        record.session_id = session
        shown = [f"session {session}"] if session else []
        shown += [f"request {request}"] if request else []
        record.context = f" [{', '.join(shown)}]" if shown else ""
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object a line: time, level, logger, message, the ids, and any traceback."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for field in ("request_id", "session_id"):
            if (value := getattr(record, field, None)) is not None:
                line[field] = value
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False)


def handler(log_format: LogFormat) -> logging.Handler:
    """A stderr handler writing `log_format`, with the ids on every record it writes."""
    out = _Handler(sys.stderr)
    out.addFilter(ContextFilter())
    out.setFormatter(JsonFormatter() if log_format == "json" else logging.Formatter(TEXT_FORMAT))
    return out


def configure(level: str, log_format: LogFormat) -> None:
    """The root logger's handler (one: configuring again replaces it). In JSON, uvicorn's own
    lines go through it as well."""
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _Handler)]:
        root.removeHandler(old)
    root.addHandler(handler(log_format))
    root.setLevel(level.upper())


class _Handler(logging.StreamHandler):  # type: ignore[type-arg]
    """The handler `configure` installs."""
