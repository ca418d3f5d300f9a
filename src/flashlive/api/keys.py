"""Which API key a request presents: the x-goog-api-key header first, then ?key= (or token)."""

from __future__ import annotations

import hmac
from collections.abc import Iterable
from urllib.parse import parse_qs

from starlette.types import Scope


def presented_key(scope: Scope) -> str | None:
    for name, value in scope.get("headers", []):
        if name == b"x-goog-api-key":
            return str(value.decode("latin-1"))
    query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
    keys = query.get("key") or query.get("access_token")
    return keys[0] if keys else None


def key_in(presented: str | None, keys: Iterable[str]) -> bool:
    """Constant-time membership: every key is compared, so timing reveals no near match."""
    if not presented:
        return False
    candidate = presented.encode()
    matched = False
    for key in keys:
        matched |= hmac.compare_digest(key.encode(), candidate)
    return matched
