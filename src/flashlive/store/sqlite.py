"""The store in one SQLite file: it survives restarts and can be shared by servers on one host.

One worker thread owns the connection, so the event loop never waits on the disk. Several
processes may open the same file: a compare-and-set reads and writes inside one `BEGIN
IMMEDIATE` transaction, which takes the file's write lock before the read, so two writers can
never both see version n and both write n + 1. Expiry times are wall-clock seconds since the
epoch, the only clock the processes share.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from flashlive.errors import Unavailable
from flashlive.store.base import Versioned

T = TypeVar("T")

SWEEP_EVERY = 256  # writes between sweeps of expired entries
BUSY_TIMEOUT_MS = 5000  # how long a write waits for another process's lock before failing

# The value is the last column: a value of hundreds of KB spills to overflow pages, and SQLite
# reads a row's columns in order, so version and expiry stay readable without walking them.
SCHEMA = """CREATE TABLE IF NOT EXISTS entries (
    key TEXT PRIMARY KEY,
    version INTEGER NOT NULL,
    expires_at REAL NOT NULL,
    value BLOB NOT NULL)"""
SELECT_LIVE = "SELECT version, value FROM entries WHERE key = ? AND expires_at > ?"
SELECT_VERSION = "SELECT version FROM entries WHERE key = ? AND expires_at > ?"
UPSERT = (
    "INSERT INTO entries (key, version, expires_at, value) VALUES (?, ?, ?, ?)"
    " ON CONFLICT (key) DO UPDATE SET version = excluded.version,"
    " expires_at = excluded.expires_at, value = excluded.value"
)


class SqliteStore:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="store-sqlite")
        self._conn: sqlite3.Connection | None = None  # opened by the worker on first use
        self._writes = 0  # touched by the worker only
        self._closed = False

    async def get(self, key: str) -> Versioned | None:
        return await self._run(self._get, key)

    async def put(
        self, key: str, value: bytes, *, ttl_s: float, expect: int | None = None
    ) -> int | None:
        return await self._run(self._put, key, bytes(value), ttl_s, expect)

    async def delete(self, key: str) -> None:
        await self._run(self._delete, key)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(self._executor, self._close)
        finally:
            self._executor.shutdown(wait=False)

    async def _run(self, work: Callable[..., T], *args: object) -> T:
        """`work(conn, *args)` in the worker thread; SQLite failures become UNAVAILABLE.

        A caller cancelled while waiting does not cancel the work: a put may still commit.
        """
        if self._closed:
            raise Unavailable("the session store is closed")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._guarded, work, args)

    def _guarded(self, work: Callable[..., T], args: tuple[object, ...]) -> T:
        try:
            return work(self._connection(), *args)
        except (sqlite3.Error, OSError) as exc:  # OSError: the directory cannot be made
            raise Unavailable(f"the session store {self.path} failed: {exc}") from exc

    # --- in the worker thread -------------------------------------------------------------

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # Autocommit mode: transactions are begun explicitly, and only for compare-and-set.
            conn = sqlite3.connect(self.path, isolation_level=None)
            try:
                conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
                # WAL: readers never block the writer; NORMAL: a commit survives the process
                # being killed (only a power cut can lose the last ones) without an fsync each.
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=NORMAL")
                conn.execute(SCHEMA)
                _sweep(conn)  # entries that expired while no server was running
            except BaseException:
                conn.close()
                raise
            self._conn = conn
        return self._conn

    def _get(self, conn: sqlite3.Connection, key: str) -> Versioned | None:
        row = conn.execute(SELECT_LIVE, (key, time.time())).fetchone()
        return None if row is None else Versioned(bytes(row[1]), int(row[0]))

    def _put(
        self, conn: sqlite3.Connection, key: str, value: bytes, ttl_s: float, expect: int | None
    ) -> int | None:
        conn.execute("BEGIN IMMEDIATE")
        try:
            now = time.time()
            row = conn.execute(SELECT_VERSION, (key, now)).fetchone()
            current = 0 if row is None else int(row[0])
            if expect is not None and expect != current:
                conn.execute("ROLLBACK")
                return None
            version = current + 1
            conn.execute(UPSERT, (key, version, now + ttl_s, value))
            conn.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            raise
        self._writes += 1
        if self._writes % SWEEP_EVERY == 0:
            _sweep(conn)
        return version

    def _delete(self, conn: sqlite3.Connection, key: str) -> None:
        conn.execute("DELETE FROM entries WHERE key = ?", (key,))

    def _close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()


def _sweep(conn: sqlite3.Connection) -> None:
    conn.execute("DELETE FROM entries WHERE expires_at <= ?", (time.time(),))
