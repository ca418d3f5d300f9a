"""The default store: a dict in this process. Nothing survives a restart."""

from __future__ import annotations

import time
from collections.abc import Callable

from flashlive.store.base import Versioned

SWEEP_EVERY = 256  # writes between sweeps of expired entries


class MemoryStore:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._entries: dict[str, tuple[bytes, int, float]] = {}  # value, version, expires at
        self._writes = 0

    def __len__(self) -> int:
        return len(self._entries)

    def _live(self, key: str) -> tuple[bytes, int, float] | None:
        entry = self._entries.get(key)
        if entry is not None and entry[2] <= self._clock():
            del self._entries[key]
            return None
        return entry

    async def get(self, key: str) -> Versioned | None:
        entry = self._live(key)
        return None if entry is None else Versioned(entry[0], entry[1])

    async def put(
        self, key: str, value: bytes, *, ttl_s: float, expect: int | None = None
    ) -> int | None:
        entry = self._live(key)
        current = 0 if entry is None else entry[1]
        if expect is not None and expect != current:
            return None
        version = current + 1
        self._entries[key] = (bytes(value), version, self._clock() + ttl_s)
        self._writes += 1
        if self._writes % SWEEP_EVERY == 0:
            self._sweep()
        return version

    async def delete(self, key: str) -> None:
        self._entries.pop(key, None)

    async def close(self) -> None:
        self._entries.clear()

    def _sweep(self) -> None:
        now = self._clock()
        for key in [k for k, (_, _, expires) in self._entries.items() if expires <= now]:
            del self._entries[key]
