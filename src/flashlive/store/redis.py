"""The store in Redis: shared by every server pointed at it, entries expired by Redis itself.

An entry is a hash (`value`, `version`) under the prefixed key, with a PEXPIRE for its time to
live. A compare-and-set is one Lua script, and Redis runs a script alone, so the read of the
version and the write that follows it cannot interleave with another server's.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl, urlsplit

from flashlive.errors import Unavailable
from flashlive.store.base import Versioned

if TYPE_CHECKING:
    from redis.asyncio import Redis

DEFAULT_PREFIX = "flashlive:"

# KEYS[1]: the entry. ARGV: the value, the time to live in ms, the expected version ('': any).
# An absent or expired key reads as version 0; a PEXPIRE of 0 ms or less deletes the entry.
CAS_SCRIPT = """
local current = tonumber(redis.call('HGET', KEYS[1], 'version') or '0')
if ARGV[3] ~= '' and tonumber(ARGV[3]) ~= current then
  return false
end
redis.call('HSET', KEYS[1], 'value', ARGV[1], 'version', current + 1)
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return current + 1
"""


class RedisStore:
    def __init__(self, url: str, *, prefix: str = DEFAULT_PREFIX) -> None:
        import redis.asyncio  # imported on use: a server with another store never loads it

        self.prefix = prefix
        self._where = redacted(url)  # the URL itself may hold a password: never shown
        self._client: Redis = redis.asyncio.Redis.from_url(url)  # connects on first command
        self._cas = self._client.register_script(CAS_SCRIPT)
        self._unreachable: tuple[type[Exception], ...] = (
            redis.ConnectionError,
            redis.TimeoutError,
        )
        self._failed: type[Exception] = redis.RedisError

    async def get(self, key: str) -> Versioned | None:
        try:
            value, version = await self._client.hmget(self.prefix + key, ["value", "version"])
        except self._failed as exc:
            raise self._unavailable(exc) from exc
        if value is None or version is None:
            return None
        # The client does not decode replies, so they are bytes; the test is for the type checker.
        return Versioned(value if isinstance(value, bytes) else value.encode(), int(version))

    async def put(
        self, key: str, value: bytes, *, ttl_s: float, expect: int | None = None
    ) -> int | None:
        ttl_ms = math.ceil(ttl_s * 1000)
        args: list[bytes | int] = [bytes(value), ttl_ms, b"" if expect is None else expect]
        try:
            version = await self._cas(keys=[self.prefix + key], args=args)
        except self._failed as exc:
            raise self._unavailable(exc) from exc
        return None if version is None else int(version)

    async def delete(self, key: str) -> None:
        try:
            await self._client.delete(self.prefix + key)
        except self._failed as exc:
            raise self._unavailable(exc) from exc

    async def close(self) -> None:
        await self._client.aclose()  # and its connection pool, made for this client alone

    def _unavailable(self, exc: Exception) -> Unavailable:
        if isinstance(exc, self._unreachable):
            return Unavailable(f"the session store at {self._where} cannot be reached: {exc}")
        return Unavailable(f"the session store at {self._where} failed: {exc}")


def redacted(url: str) -> str:
    """The URL fit for a log or an error message: any password replaced by ***."""
    if "://" not in url:
        return url  # no authority part, so no password in it
    parts = urlsplit(url)
    netloc = parts.netloc
    userinfo, at, host = netloc.rpartition("@")
    if at:
        user, colon, _ = userinfo.partition(":")
        # A lone field may be a password written in the user's place: hide it too.
        netloc = f"{user}:***@{host}" if colon and user else f"***@{host}"
    query = "&".join(
        f"{name}={'***' if name == 'password' else value}"
        for name, value in parse_qsl(parts.query, keep_blank_values=True)
    )
    # Put together by hand: urlunsplit would shorten unix:///path to unix:/path.
    return f"{parts.scheme}://{netloc}{parts.path}" + (f"?{query}" if query else "")
