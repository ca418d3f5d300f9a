"""Where usage records are kept: SQLite under the data dir by default, PostgreSQL by URL.

Both backends share one schema and one set of statements. Writes are idempotent (`ON CONFLICT
(request_id) DO NOTHING`), which is what makes retrying a batch of unknown fate safe and keeps a
record from ever being counted twice. Cost is not stored: a summary prices the token totals with
the current price table, so changing a price re-prices history (cost is linear in the counts, so
pricing sums per model equals summing the prices of each record).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import sqlite3
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

from flashlive.errors import InvalidArgument, Unavailable
from flashlive.ledger.prices import PriceTable
from flashlive.ledger.records import UsageRecord, UsageRow

if TYPE_CHECKING:
    from psycopg import AsyncConnection

log = logging.getLogger(__name__)
GroupBy = Literal["day", "model", "key"]
_GROUPS: dict[str, str] = {"day": "r.day", "model": "r.model", "key": "r.key_hash"}
MAX_BATCH = 512  # records committed in one transaction at most
CHECKPOINT_EVERY_S = 1.0  # how often the SQLite WAL is copied back into the database

SCHEMA = (
    """CREATE TABLE IF NOT EXISTS usage_records (
        request_id TEXT PRIMARY KEY,
        ts DOUBLE PRECISION NOT NULL,
        day TEXT NOT NULL,
        key_hash TEXT NOT NULL,
        model TEXT NOT NULL,
        method TEXT NOT NULL,
        cached_tokens BIGINT NOT NULL,
        cache_storage_token_hours DOUBLE PRECISION NOT NULL,
        latency_s DOUBLE PRECISION NOT NULL,
        status INTEGER NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS usage_tokens (
        request_id TEXT NOT NULL,
        direction TEXT NOT NULL,
        modality TEXT NOT NULL,
        tokens BIGINT NOT NULL,
        PRIMARY KEY (request_id, direction, modality))""",
    "CREATE INDEX IF NOT EXISTS usage_records_ts ON usage_records (ts)",
    "CREATE INDEX IF NOT EXISTS usage_records_key_ts ON usage_records (key_hash, ts)",
)
INSERT_RECORD = (
    "INSERT INTO usage_records (request_id, ts, day, key_hash, model, method, cached_tokens,"
    " cache_storage_token_hours, latency_s, status) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    " ON CONFLICT (request_id) DO NOTHING"
)
INSERT_TOKENS = (
    "INSERT INTO usage_tokens (request_id, direction, modality, tokens) VALUES (?, ?, ?, ?)"
    " ON CONFLICT (request_id, direction, modality) DO NOTHING"
)


class Ledger(Protocol):
    async def record(self, rec: UsageRecord) -> None:
        """Returns once the record is committed (durable against the process being killed)."""

    async def summary(
        self, key_hash: str | None = None, since: datetime | None = None, by: GroupBy = "day"
    ) -> list[UsageRow]: ...

    async def close(self) -> None: ...


# --- shared SQL ---------------------------------------------------------------------------


def record_params(rec: UsageRecord) -> tuple[Any, ...]:
    when = _utc(rec.time)
    return (
        rec.request_id,
        when.timestamp(),
        when.date().isoformat(),
        rec.key_hash,
        rec.model,
        rec.method,
        rec.cached_tokens,
        rec.cache_storage_token_hours,
        rec.latency_s,
        rec.status,
    )


def token_params(records: Iterable[UsageRecord]) -> list[tuple[str, str, str, int]]:
    rows = []
    for rec in records:
        for direction, counts in (("in", rec.input_tokens), ("out", rec.output_tokens)):
            rows += [(rec.request_id, direction, m.upper(), n) for m, n in counts.items() if n]
    return rows


@dataclass
class SummaryQuery:
    """The two aggregate statements of a summary, and the arguments they share."""

    by: str
    key_hash: str | None
    since: datetime | None
    groups: str = field(init=False)

    def __post_init__(self) -> None:
        if self.by not in _GROUPS:
            raise InvalidArgument(f"by must be one of {', '.join(_GROUPS)}, not {self.by!r}")
        self.groups = _GROUPS[self.by]

    def where(self) -> tuple[str, list[Any]]:
        terms: list[str] = ["1 = 1"]
        args: list[Any] = []
        if self.key_hash is not None:
            terms.append("r.key_hash = ?")
            args.append(self.key_hash)
        if self.since is not None:
            terms.append("r.ts >= ?")
            args.append(_utc(self.since).timestamp())
        return " AND ".join(terms), args

    def records_sql(self) -> str:
        where, _ = self.where()
        return (
            f"SELECT {self.groups}, r.model, COUNT(*), SUM(r.cached_tokens),"
            f" SUM(r.cache_storage_token_hours) FROM usage_records r WHERE {where}"
            f" GROUP BY {self.groups}, r.model"
        )

    def tokens_sql(self) -> str:
        where, _ = self.where()
        return (
            f"SELECT {self.groups}, r.model, t.direction, t.modality, SUM(t.tokens)"
            " FROM usage_tokens t JOIN usage_records r ON r.request_id = t.request_id"
            f" WHERE {where} GROUP BY {self.groups}, r.model, t.direction, t.modality"
        )


@dataclass
class _Totals:
    requests: int = 0
    cached: int = 0
    storage: float = 0.0
    inputs: dict[str, int] = field(default_factory=dict)
    outputs: dict[str, int] = field(default_factory=dict)


def build_rows(
    prices: PriceTable, record_rows: Sequence[Sequence[Any]], token_rows: Sequence[Sequence[Any]]
) -> list[UsageRow]:
    """Per-(group, model) totals from SQL → priced rows per group."""
    totals: dict[tuple[str, str], _Totals] = {}
    for group, model, requests, cached, storage in record_rows:
        totals[(str(group), str(model))] = _Totals(
            int(requests), int(cached or 0), float(storage or 0)
        )
    for group, model, direction, modality, tokens in token_rows:
        entry = totals.setdefault((str(group), str(model)), _Totals())
        counts = entry.inputs if direction == "in" else entry.outputs
        counts[str(modality)] = counts.get(str(modality), 0) + int(tokens or 0)
    rows: dict[str, UsageRow] = {}
    for (group, model), t in totals.items():
        cost = prices.cost_of(model, t.inputs, t.outputs, t.cached, t.storage)
        row = UsageRow(
            group, t.requests, sum(t.inputs.values()), sum(t.outputs.values()), t.cached, cost
        )
        rows[group] = _add(rows[group], row) if group in rows else row
    return [rows[g] for g in sorted(rows)]


def _add(a: UsageRow, b: UsageRow) -> UsageRow:
    return UsageRow(
        a.group,
        a.requests + b.requests,
        a.input_tokens + b.input_tokens,
        a.output_tokens + b.output_tokens,
        a.cached_tokens + b.cached_tokens,
        a.cost_usd + b.cost_usd,
    )


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


# --- SQLite -------------------------------------------------------------------------------


@dataclass
class _Pending:
    record: UsageRecord
    future: asyncio.Future[None]
    loop: asyncio.AbstractEventLoop

    def settle(self, error: BaseException | None) -> None:
        with contextlib.suppress(RuntimeError):  # the loop may be closed by now
            self.loop.call_soon_threadsafe(_resolve, self.future, error)


def _resolve(future: asyncio.Future[None], error: BaseException | None) -> None:
    if future.done():  # its awaiter was cancelled; the write happened (or failed) anyway
        return
    if error is None:
        future.set_result(None)
    else:
        future.set_exception(error)


def _sqlite_connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
    # WAL with synchronous=NORMAL: a commit is in the WAL file (the OS page cache) when it
    # returns, so it survives the process being killed; only a power cut can lose the tail.
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA busy_timeout=5000")
    return conn


class SqliteLedger:
    """One writer thread owns the connection; records waiting together commit together."""

    def __init__(self, path: Path, prices: PriceTable | None = None) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._prices = prices or PriceTable()
        conn = _sqlite_connect(path)
        for statement in SCHEMA:
            conn.execute(statement)
        # A checkpoint fsyncs the database file: done by the writer it would stall every record
        # waiting behind it for milliseconds, so a separate thread does it, without blocking.
        conn.execute("PRAGMA wal_autocheckpoint=0")
        # Unbounded by type, bounded by its callers: each awaits its own record's commit, so the
        # queue holds at most one record per call in flight.
        self._queue: queue.SimpleQueue[_Pending | None] = queue.SimpleQueue()
        self._closed = False
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._write_loop, args=(conn,), name="ledger-writer", daemon=True
        )
        self._checkpointer = threading.Thread(
            target=self._checkpoint_loop, name="ledger-checkpoint", daemon=True
        )
        self._thread.start()
        self._checkpointer.start()

    async def record(self, rec: UsageRecord) -> None:
        if self._closed:
            raise Unavailable("the usage ledger is closed")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        self._queue.put(_Pending(rec, future, loop))
        await future

    async def summary(
        self, key_hash: str | None = None, since: datetime | None = None, by: GroupBy = "day"
    ) -> list[UsageRow]:
        query = SummaryQuery(by, key_hash, since)
        return await asyncio.to_thread(self._summary, query)

    async def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._queue.put(None)
            self._stop.set()
            await asyncio.to_thread(self._thread.join)
            await asyncio.to_thread(self._checkpointer.join)

    def _summary(self, query: SummaryQuery) -> list[UsageRow]:
        _, args = query.where()
        conn = _sqlite_connect(self.path)
        try:
            records = conn.execute(query.records_sql(), args).fetchall()
            tokens = conn.execute(query.tokens_sql(), args).fetchall()
        finally:
            conn.close()
        return build_rows(self._prices, records, tokens)

    def _write_loop(self, conn: sqlite3.Connection) -> None:
        try:
            while (batch := self._next_batch()) is not None:
                error = _sqlite_write(conn, [p.record for p in batch])
                for pending in batch:
                    pending.settle(error)
        finally:
            conn.close()

    def _checkpoint_loop(self) -> None:
        conn = _sqlite_connect(self.path)
        try:
            while not self._stop.wait(CHECKPOINT_EVERY_S):
                # PASSIVE copies what it can without waiting for (or blocking) the writer.
                conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except sqlite3.Error:
            log.exception("usage ledger checkpoint failed; the WAL keeps the records")
        finally:
            conn.close()

    def _next_batch(self) -> list[_Pending] | None:
        """Block for one record, then take every one already waiting; None after close."""
        first = self._queue.get()
        if first is None:
            return None
        batch = [first]
        while len(batch) < MAX_BATCH:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is None:
                self._queue.put(None)  # stop after this batch is written
                break
            batch.append(item)
        return batch


def _sqlite_write(conn: sqlite3.Connection, records: list[UsageRecord]) -> BaseException | None:
    try:
        conn.execute("BEGIN")
        conn.executemany(INSERT_RECORD, [record_params(r) for r in records])
        conn.executemany(INSERT_TOKENS, token_params(records))
        conn.execute("COMMIT")
    except sqlite3.Error as exc:
        with contextlib.suppress(sqlite3.Error):
            conn.execute("ROLLBACK")
        return Unavailable(f"the usage ledger could not be written: {exc}")
    return None


# --- PostgreSQL ---------------------------------------------------------------------------


def _pg(sql: str) -> str:
    return sql.replace("?", "%s")


class PostgresLedger:
    """psycopg 3, async. Whoever holds the lock commits every record waiting (group commit)."""

    def __init__(self, url: str, prices: PriceTable | None = None) -> None:
        self._url = url
        self._prices = prices or PriceTable()
        self._conn: AsyncConnection[Any] | None = None  # opened on first use
        self._lock = asyncio.Lock()
        self._waiting: list[tuple[UsageRecord, asyncio.Future[None]]] = []

    async def record(self, rec: UsageRecord) -> None:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.append((rec, future))
        async with self._lock:
            if not future.done():
                await self._write_waiting()
        await future

    async def _write_waiting(self) -> None:
        batch, self._waiting = self._waiting[:MAX_BATCH], self._waiting[MAX_BATCH:]
        try:
            conn = await self._connection()
            records = [r for r, _ in batch]
            async with conn.transaction(), conn.cursor() as cur:
                await cur.executemany(_pg(INSERT_RECORD), [record_params(r) for r in records])
                rows = token_params(records)
                if rows:
                    await cur.executemany(_pg(INSERT_TOKENS), rows)
        except asyncio.CancelledError:
            # Whether the commit happened is unknown; the writes are idempotent, so the next
            # writer simply repeats them.
            self._waiting[:0] = batch
            await self._drop_connection()
            raise
        except Exception as exc:
            await self._drop_connection()
            error = Unavailable(f"the usage ledger could not be written: {exc}")
            for _, future in batch:
                if not future.done():
                    future.set_exception(error)
            return
        for _, future in batch:
            if not future.done():
                future.set_result(None)

    async def _connection(self) -> AsyncConnection[Any]:
        if self._conn is None:
            import psycopg  # imported on use: SQLite-only installs never load it

            conn = await psycopg.AsyncConnection.connect(self._url)
            async with conn.transaction():
                for statement in SCHEMA:
                    await conn.execute(statement)
            self._conn = conn
        return self._conn

    async def _drop_connection(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.close()

    async def summary(
        self, key_hash: str | None = None, since: datetime | None = None, by: GroupBy = "day"
    ) -> list[UsageRow]:
        import psycopg

        query = SummaryQuery(by, key_hash, since)
        _, args = query.where()
        async with await psycopg.AsyncConnection.connect(self._url) as conn:
            records = await (await conn.execute(_pg(query.records_sql()), args)).fetchall()
            tokens = await (await conn.execute(_pg(query.tokens_sql()), args)).fetchall()
        return build_rows(self._prices, records, tokens)

    async def close(self) -> None:
        async with self._lock:
            if self._waiting:
                await self._write_waiting()
            await self._drop_connection()


def open_ledger(url: str | None, data_dir: Path, prices: PriceTable | None = None) -> Ledger:
    """None: SQLite at data_dir/ledger.sqlite3; else sqlite:///path or postgresql://..."""
    if url is None or not url.strip():
        return SqliteLedger(data_dir / "ledger.sqlite3", prices)
    if url.startswith("sqlite:///"):
        return SqliteLedger(Path(url.removeprefix("sqlite:///")).expanduser(), prices)
    if url.startswith(("postgresql://", "postgres://")):
        return PostgresLedger(url, prices)
    raise InvalidArgument(f"unsupported ledger URL {url!r}: use sqlite:///path or postgresql://...")
