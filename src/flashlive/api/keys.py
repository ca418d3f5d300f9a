"""Which credential a request presents: an API key, or an ephemeral token (`auth_tokens/...`).

A key travels in the x-goog-api-key header or the `key` / `access_token` query parameter. A
token travels in `Authorization: Token auth_tokens/...` (google-genai for Python, which also
puts it in x-goog-api-key) or `?access_token=auth_tokens/...` (the JavaScript SDK).
"""

from __future__ import annotations

import hmac
import logging
import re
from collections.abc import Iterable
from urllib.parse import parse_qs

from starlette.types import Scope

from flashlive.protocol.tokens import NAME_PREFIX

AUTH_SCHEMES = ("token", "bearer")
_QUERY_CREDENTIAL = re.compile(r"([?&](?:key|access_token)=)[^&\s\"']+")


def presented_key(scope: Scope) -> str | None:
    for name, value in scope.get("headers", []):
        if name == b"x-goog-api-key":
            return str(value.decode("latin-1"))
    query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
    keys = query.get("key") or query.get("access_token")
    return keys[0] if keys else None


def is_token(credential: str | None) -> bool:
    """Whether a credential is an ephemeral token rather than an API key."""
    return credential is not None and credential.startswith(NAME_PREFIX)


def presented_token(scope: Scope) -> str | None:
    """The ephemeral token a request presents, wherever it put it; None when it presents none."""
    candidates: list[str | None] = []
    for name, value in scope.get("headers", []):
        if name == b"authorization":
            scheme, _, credential = str(value.decode("latin-1")).strip().partition(" ")
            if scheme.lower() in AUTH_SCHEMES:
                candidates.append(credential.strip())
    query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
    candidates += [presented_key(scope), *query.get("access_token", []), *query.get("key", [])]
    return next((c for c in candidates if c is not None and is_token(c)), None)


def key_in(presented: str | None, keys: Iterable[str]) -> bool:
    """Constant-time membership: every key is compared, so timing reveals no near match."""
    if not presented:
        return False
    candidate = presented.encode()
    matched = False
    for key in keys:
        matched |= hmac.compare_digest(key.encode(), candidate)
    return matched


def redact_credentials(text: str) -> str:
    """`text` with the values of `key=` and `access_token=` query parameters hidden."""
    return _QUERY_CREDENTIAL.sub(r"\1REDACTED", text)


class RedactCredentials(logging.Filter):
    """Keeps keys and tokens sent in a query string out of log lines (uvicorn logs each path).

    Install on the "uvicorn.access" and "uvicorn.error" loggers: the latter logs every
    WebSocket handshake with its query string.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        # The arguments are redacted where they are, not merged into the message: uvicorn's
        # access formatter unpacks `record.args` itself, and fails on a record without them.
        if isinstance(record.msg, str):
            record.msg = redact_credentials(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(_redacted(a) for a in record.args)
        elif isinstance(record.args, dict):
            record.args = {k: _redacted(v) for k, v in record.args.items()}
        return True


def _redacted(value: object) -> object:
    return redact_credentials(value) if isinstance(value, str) else value
