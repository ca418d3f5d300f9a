"""The cachedContents registry: which cached prefixes exist, whose they are, when they end.

Every entry is held in memory and written, one JSON file each, under `data_dir/caches/`
(temp file, fsync, `os.replace`), so a restart finds exactly the caches that were
acknowledged. A file that does not read back as a whole, valid entry is deleted at start
with a log line: a corrupt cache is reported gone, never half-loaded.

Threads: `create` and `update` write and fsync a file, so call them in a worker thread
(`asyncio.to_thread`). `get`, `list`, `delete` and `sweep` touch memory and at most unlink a
file: call them on the event loop, which is where the on_delete callbacks then run (the KV
state store is not thread-safe).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import logging
import os
import re
import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError

from flashlive.errors import InvalidArgument, NotFound
from flashlive.protocol.base import model_id

log = logging.getLogger(__name__)

DEFAULT_TTL = timedelta(hours=1)  # Gemini's default when a create names no expiry
DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000  # Gemini coerces larger page sizes to this
NAME_PREFIX = "cachedContents/"
_ID = re.compile(r"^[0-9a-f]{16}$")  # secrets.token_hex(8); anything else is not ours

Clock = Callable[[], datetime]
DeleteCallback = Callable[["CacheEntry"], None]


def utc_now() -> datetime:
    return datetime.now(UTC)


class CacheEntry(BaseModel):
    """One cache. Also its file format, so strict: a file either validates whole or is dropped."""

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)

    id: str = Field(pattern=_ID.pattern)
    owner: str  # an opaque id of the API key (its hash), never the key itself
    model: str  # a model id, without "models/"
    payload: dict[str, Any]  # contents, systemInstruction, tools, toolConfig as wire JSON
    token_count: int = Field(ge=0)
    display_name: str | None = None
    create_time: AwareDatetime
    update_time: AwareDatetime
    expire_time: AwareDatetime

    @property
    def name(self) -> str:
        return NAME_PREFIX + self.id


# Inside CacheRegistry the name `list` is its method, so its annotations use this alias.
Entries = list[CacheEntry]


@dataclass(frozen=True)
class Page:
    entries: Entries
    next_page_token: str | None


class CacheRegistry:
    def __init__(
        self,
        data_dir: Path,
        *,
        min_tokens: int,
        clock: Clock = utc_now,
        default_ttl: timedelta = DEFAULT_TTL,
    ) -> None:
        if min_tokens < 0:
            raise ValueError("min_tokens must not be negative")
        self._dir = data_dir / "caches"
        self._min_tokens = min_tokens
        self._clock = clock
        self._default_ttl = default_ttl
        self._callbacks: list[DeleteCallback] = []
        # Writers hold the lock so a file's last write matches memory. Readers do not: every
        # mutation replaces or removes a whole entry in one dict operation, atomic under the GIL.
        self._lock = threading.Lock()
        self._dir.mkdir(parents=True, exist_ok=True)
        self._entries: dict[str, CacheEntry] = self._load()

    @property
    def min_tokens(self) -> int:
        return self._min_tokens

    def on_delete(self, callback: DeleteCallback) -> None:
        """Call `callback(entry)` after an entry is deleted or swept, e.g. to free its KV state.

        It runs in the thread that called `delete` or `sweep`: the event loop under the API and
        the sweeper. An exception it raises is logged, not propagated.
        """
        self._callbacks.append(callback)

    def known_ids(self) -> frozenset[str]:
        """Every entry held, expired or not: lets a state store drop what outlived its entry."""
        return frozenset(self._entries)

    # --- reads -------------------------------------------------------------------------------

    def get(self, owner: str, cache_id: str) -> CacheEntry:
        """The live entry `cache_id` of `owner`; NotFound when missing, expired or another's."""
        entry = self._entries.get(cache_id)
        if entry is None or entry.owner != owner or entry.expire_time <= self._clock():
            # One answer for all three, so a key cannot probe for other keys' caches.
            raise NotFound(f"{NAME_PREFIX}{cache_id} is not found (or it has expired)")
        return entry

    def list(self, owner: str, page_size: int | None = None, page_token: str | None = None) -> Page:
        """`owner`'s live entries, oldest first, a page at a time."""
        if page_size is not None and page_size < 0:
            raise InvalidArgument("pageSize must not be negative")
        size = min(page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
        after = _decode_token(page_token) if page_token else None
        now = self._clock()
        mine = sorted(
            (e for e in list(self._entries.values()) if e.owner == owner and e.expire_time > now),
            key=_sort_key,
        )
        if after is not None:
            mine = [e for e in mine if _sort_key(e) > after]
        page = mine[:size]
        more = len(mine) > size
        return Page(page, _encode_token(_sort_key(page[-1])) if more else None)

    def expired(self) -> Entries:
        now = self._clock()
        return [e for e in list(self._entries.values()) if e.expire_time <= now]

    # --- mutations ---------------------------------------------------------------------------

    def create(
        self,
        owner: str,
        model: str,
        payload: dict[str, Any],
        token_count: int,
        *,
        ttl: timedelta | None = None,
        expire_time: datetime | None = None,
        display_name: str | None = None,
    ) -> CacheEntry:
        if token_count < self._min_tokens:
            raise InvalidArgument(
                f"cached content is too small: {token_count} tokens, the minimum is "
                f"{self._min_tokens}"
            )
        now = self._clock()
        if ttl is None and expire_time is None:
            ttl = self._default_ttl
        entry = CacheEntry(
            id=secrets.token_hex(8),
            owner=owner,
            model=model_id(model),
            payload=payload,
            token_count=token_count,
            display_name=display_name,
            create_time=now,
            update_time=now,
            expire_time=_expiry(now, ttl, expire_time),
        )
        self._commit(entry, replacing=None)
        return entry

    def update(
        self,
        owner: str,
        cache_id: str,
        *,
        ttl: timedelta | None = None,
        expire_time: datetime | None = None,
    ) -> CacheEntry:
        """A new expiry for a live entry: `ttl` from now, or `expire_time`."""
        while True:
            entry = self.get(owner, cache_id)
            now = self._clock()
            updated = entry.model_copy(
                update={"update_time": now, "expire_time": _expiry(now, ttl, expire_time)}
            )
            if self._commit(updated, replacing=entry):
                return updated
            # Another update came first (or a delete: the next get says NotFound).

    def delete(self, owner: str, cache_id: str) -> None:
        with self._lock:
            entry = self.get(owner, cache_id)
            self._remove(entry)
        self._notify(entry)

    def sweep(self) -> Entries:
        """Delete every expired entry and its file; returns what went."""
        with self._lock:
            gone = self.expired()
            for entry in gone:
                self._remove(entry)
        for entry in gone:
            log.info("cache %s expired at %s; deleted", entry.name, entry.expire_time.isoformat())
            self._notify(entry)
        return gone

    async def run_sweeper(self, interval_s: float) -> None:
        """Sweep now and every `interval_s` seconds until cancelled; run it as a task."""
        while True:
            try:
                self.sweep()
            except Exception:
                # Nobody awaits this task, so an error would end expiry silently: log it and
                # retry next round (a full disk, a read-only remount).
                log.exception("sweeping expired caches failed")
            await asyncio.sleep(interval_s)

    # --- files -------------------------------------------------------------------------------

    def _path(self, cache_id: str) -> Path:
        return self._dir / f"{cache_id}.json"

    def _commit(self, entry: CacheEntry, *, replacing: CacheEntry | None) -> bool:
        """Write `entry` and hold it, if the registry still holds `replacing` for its id.

        The slow part (writing and syncing the bytes) happens outside the lock, so a delete on
        the event loop waits for a rename at most. False when `replacing` is no longer current.
        """
        temp = self._dir / f".{entry.id}.{secrets.token_hex(4)}.tmp"
        try:
            with temp.open("wb") as f:
                f.write(entry.model_dump_json().encode())
                f.flush()
                os.fsync(f.fileno())
            with self._lock:
                if self._entries.get(entry.id) is not replacing:
                    return False
                os.replace(temp, self._path(entry.id))
                self._entries[entry.id] = entry
        finally:
            temp.unlink(missing_ok=True)  # a no-op once renamed
        self._sync_dir()
        return True

    def _remove(self, entry: CacheEntry) -> None:
        # The file goes first: if that fails the entry stays whole, in memory and on disk.
        self._path(entry.id).unlink(missing_ok=True)
        self._entries.pop(entry.id, None)

    def _sync_dir(self) -> None:
        """Make the rename itself durable, not just the file's bytes."""
        fd = os.open(self._dir, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def _notify(self, entry: CacheEntry) -> None:
        for callback in self._callbacks:
            try:
                callback(entry)
            except Exception:
                # A failing state store must not undo a delete the client was told happened.
                log.exception("on_delete callback failed for %s", entry.name)

    def _load(self) -> dict[str, CacheEntry]:
        entries: dict[str, CacheEntry] = {}
        for path in sorted(self._dir.iterdir()):
            if path.is_dir():
                continue  # not written by the registry; leave it to whoever made it
            entry = _read(path)
            if entry is not None:
                entries[entry.id] = entry
                continue
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        if entries:
            log.info("loaded %d cached contents from %s", len(entries), self._dir)
        return entries


def _read(path: Path) -> CacheEntry | None:
    """The entry a file holds, or None (logged) when it is partial, corrupt or misnamed."""
    if path.suffix != ".json":
        log.warning("deleting %s: not a cache file (an interrupted write?)", path)
        return None
    try:
        entry = CacheEntry.model_validate_json(path.read_bytes())
    except (OSError, ValidationError) as exc:
        log.warning("deleting corrupt cache file %s: %s", path, str(exc).splitlines()[0])
        return None
    if path.stem != entry.id:
        log.warning("deleting %s: it holds cache %s", path, entry.id)
        return None
    return entry


def _expiry(now: datetime, ttl: timedelta | None, expire_time: datetime | None) -> datetime:
    if ttl is not None and expire_time is not None:
        raise InvalidArgument("give either ttl or expireTime, not both")
    if expire_time is not None:
        if expire_time <= now:
            raise InvalidArgument("expireTime must be in the future")
        return expire_time
    if ttl is None:
        raise InvalidArgument("give either ttl or expireTime")
    if ttl <= timedelta(0):
        raise InvalidArgument("ttl must be positive")
    try:
        return now + ttl
    except OverflowError:
        raise InvalidArgument("ttl is too long") from None


def _sort_key(entry: CacheEntry) -> tuple[str, str]:
    # A fixed-width UTC stamp, so comparing the strings compares the times.
    return (entry.create_time.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f"), entry.id)


def _encode_token(key: tuple[str, str]) -> str:
    return base64.urlsafe_b64encode("|".join(key).encode()).decode().rstrip("=")


def _decode_token(token: str) -> tuple[str, str]:
    """The position a pageToken stands for: the sort key of the last entry of its page."""
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise InvalidArgument("pageToken is not valid") from None
    stamp, sep, cache_id = raw.partition("|")
    if not sep or not _ID.fullmatch(cache_id):
        raise InvalidArgument("pageToken is not valid")
    return (stamp, cache_id)
