"""Session resumption: handles, the saved state in the store, and a takeover by another connection.

A handle is a bearer secret: the store keeps the session under its digest only. Each write
names the version this connection last wrote; a store that holds a newer one means the session
was resumed elsewhere, and this connection ends (`taken_over`).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import secrets
from collections.abc import Awaitable, Callable

from flashlive.errors import FailedPrecondition, FlashliveError
from flashlive.live.session import SavedSession
from flashlive.protocol.base import model_id
from flashlive.protocol.live import Setup
from flashlive.store import Store

log = logging.getLogger(__name__)

TAKEOVER_WAIT_S = 5.0  # how long a resumed session waits for its old connection to end
UNKNOWN_HANDLE = "sessionResumption.handle is unknown or has expired"
RESUMED_ELSEWHERE = "this session was resumed on another connection"


def store_key(handle: str) -> str:
    """Handles are bearer secrets: the store keeps only their digest."""
    return "session:" + hashlib.sha256(handle.encode()).hexdigest()


def new_handle() -> str:
    return secrets.token_urlsafe(32)


def check_saved(raw: bytes, key_hash: str, setup: Setup, session_id: str) -> SavedSession:
    """The saved session in `raw`, if the caller may resume it with `setup`."""
    gone = FailedPrecondition(UNKNOWN_HANDLE)
    try:
        saved = SavedSession.from_bytes(raw)
    except ValueError as exc:
        log.warning("live session %s: %s", session_id, exc)
        raise gone from None
    if not secrets.compare_digest(saved.key_hash, key_hash):
        raise gone  # another key's session: not even its existence is told
    if model_id(saved.setup.model) != model_id(setup.model):
        raise FailedPrecondition(
            f"the session to resume runs {saved.setup.model}, not {setup.model}"
        )
    return saved


class Resumption:
    """One connection's hold on a resumable session's saved state."""

    def __init__(
        self,
        store: Store,
        holders: dict[str, Callable[[], Awaitable[None]]],
        *,
        ttl_s: float,
        session_id: str,
    ) -> None:
        self.store = store
        self.holders = holders  # open connections by store key, shared by the process
        self.ttl_s = ttl_s
        self.session_id = session_id
        self.handle: str | None = None
        self.key: str | None = None
        self.version = 0  # of the saved state this connection last wrote
        self.snapshot: Callable[[], SavedSession] | None = None  # the state to save, once set up
        self.lock = asyncio.Lock()
        self.queued = False  # a background save is waiting for the lock: one is enough
        self.failure: FlashliveError | BaseException | None = None
        self.taken_over = asyncio.Event()
        self.ended = asyncio.Event()

    async def resume(self, handle: str, setup: Setup, key_hash: str) -> SavedSession:
        """The saved session a handle names, once any connection still serving it has ended."""
        key = store_key(handle)
        end_holder = self.holders.get(key)
        if end_holder is not None:
            await end_holder()
        found = await self.store.get(key)
        if found is None:
            raise FailedPrecondition(UNKNOWN_HANDLE)
        saved = check_saved(found.value, key_hash, setup, self.session_id)
        self.version = found.version
        return saved

    def hold(self, handle: str, snapshot: Callable[[], SavedSession]) -> None:
        """From now on this connection serves the session `handle` names."""
        self.handle = handle
        self.key = store_key(handle)
        self.snapshot = snapshot
        self.holders[self.key] = self.end_for_takeover

    def release(self) -> None:
        self.ended.set()
        if self.key is not None and self.holders.get(self.key) == self.end_for_takeover:
            del self.holders[self.key]

    async def save(self) -> None:
        """Write the session's state where a resuming connection will find it.

        The write finishes even when the caller is cancelled (a barge-in, say), so the version
        this connection expects next is always the one it last wrote.
        """
        if self.key is None or self.snapshot is None:
            return
        await asyncio.shield(asyncio.ensure_future(self._write()))
        if self.failure is not None:
            raise self.failure

    async def save_in_background(self) -> None:
        """A save nobody waits for. While one is still waiting for the lock another adds
        nothing (it reads the state when it gets the lock), so at most one waits at a time."""
        if self.queued or self.key is None:
            return
        self.queued = True  # cleared when the write takes the lock
        await self.save()

    async def _write(self) -> None:
        assert self.key is not None and self.snapshot is not None
        async with self.lock:
            self.queued = False  # from here a new change needs a new save
            if self.failure is not None:
                return
            try:
                version = await self.store.put(
                    self.key, self.snapshot().to_bytes(), ttl_s=self.ttl_s, expect=self.version
                )
            except Exception as exc:  # the store is down: the session cannot stay resumable
                self.failure = exc
                self.taken_over.set()
                return
            if version is None:
                self.failure = FailedPrecondition(RESUMED_ELSEWHERE)
                self.taken_over.set()
                return
            self.version = version

    async def end_for_takeover(self) -> None:
        self.taken_over.set()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(TAKEOVER_WAIT_S):
                await self.ended.wait()
