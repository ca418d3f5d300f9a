"""The store interface: a key-value map whose entries expire and change by compare-and-set."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class Versioned:
    value: bytes
    version: int  # 1 for a new entry, +1 on every write


class Store(Protocol):
    """Entries are bytes under string keys; every entry has a time to live.

    `put` is a compare-and-set: `expect=None` writes unconditionally, `expect=0` writes only if
    the key is absent (or expired), `expect=n` only if the entry's version is still n. It returns
    the new version, or None when the condition failed. Expired entries are never returned.
    """

    async def get(self, key: str) -> Versioned | None: ...

    async def put(
        self, key: str, value: bytes, *, ttl_s: float, expect: int | None = None
    ) -> int | None: ...

    async def delete(self, key: str) -> None: ...

    async def close(self) -> None: ...
