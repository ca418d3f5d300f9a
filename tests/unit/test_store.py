"""The session store backends: one behaviour, checked on memory, SQLite and a real Redis."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path

import pytest
import redis.asyncio
from conftest import free_port
from redis_server import redis_server

from flashlive.errors import Unavailable
from flashlive.store import MemoryStore, RedisStore, SqliteStore, Store, open_store
from flashlive.store.redis import redacted

TTL = 60.0
USES = 60  # the counter the CAS tests spend, like the uses of an ephemeral token
WORKERS = 20


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    with redis_server(free_port()) as url:
        yield url


@pytest.fixture(params=["memory", "sqlite", "redis"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    made: Store
    if request.param == "memory":
        made = MemoryStore()
    elif request.param == "sqlite":
        made = SqliteStore(tmp_path / "sessions.sqlite3")
    else:
        url = request.getfixturevalue("redis_url")
        made = RedisStore(url, prefix=f"test-{uuid.uuid4().hex}:")  # no test sees another's keys
    yield made
    await made.close()


async def spend(stores: Sequence[Store], key: str) -> tuple[int, int]:
    """Count `key` down to 0 by read-modify-write from WORKERS coroutines.

    Returns the writes that succeeded and those refused because another came first.
    """
    successes = conflicts = 0

    async def worker(store: Store) -> None:
        nonlocal successes, conflicts
        while (entry := await store.get(key)) is not None and int(entry.value) > 0:
            await asyncio.sleep(0)  # let the others read the same version
            left = str(int(entry.value) - 1).encode()
            if await store.put(key, left, ttl_s=TTL, expect=entry.version) is None:
                conflicts += 1
            else:
                successes += 1

    async with asyncio.timeout(15), asyncio.TaskGroup() as group:
        for i in range(WORKERS):
            group.create_task(worker(stores[i % len(stores)]))
    return successes, conflicts


# --- every backend ------------------------------------------------------------------------


async def test_missing_key_reads_none(store: Store) -> None:
    assert await store.get("absent") is None


async def test_round_trip_starts_at_version_1(store: Store) -> None:
    assert await store.put("k", b'{"turns": 3}', ttl_s=TTL) == 1
    entry = await store.get("k")
    assert entry is not None
    assert (entry.value, entry.version) == (b'{"turns": 3}', 1)


async def test_every_write_increments_the_version(store: Store) -> None:
    versions = [await store.put("k", b"v%d" % i, ttl_s=TTL) for i in range(3)]
    assert versions == [1, 2, 3]
    entry = await store.get("k")
    assert entry is not None
    assert (entry.value, entry.version) == (b"v2", 3)


async def test_expect_zero_writes_only_a_new_key(store: Store) -> None:
    assert await store.put("k", b"first", ttl_s=TTL, expect=0) == 1
    assert await store.put("k", b"second", ttl_s=TTL, expect=0) is None
    entry = await store.get("k")
    assert entry is not None
    assert (entry.value, entry.version) == (b"first", 1)


async def test_expect_n_writes_only_over_version_n(store: Store) -> None:
    await store.put("k", b"a", ttl_s=TTL)
    await store.put("k", b"b", ttl_s=TTL)
    assert await store.put("k", b"stale", ttl_s=TTL, expect=1) is None
    assert await store.put("k", b"c", ttl_s=TTL, expect=2) == 3
    assert await store.put("absent", b"x", ttl_s=TTL, expect=1) is None
    assert await store.put("k", b"never", ttl_s=TTL, expect=-1) is None
    assert await store.get("absent") is None
    entry = await store.get("k")
    assert entry is not None
    assert (entry.value, entry.version) == (b"c", 3)


async def test_delete_forgets_the_entry_and_its_version(store: Store) -> None:
    await store.put("k", b"a", ttl_s=TTL)
    await store.put("k", b"b", ttl_s=TTL)
    await store.delete("k")
    await store.delete("k")  # deleting nothing is not an error
    assert await store.get("k") is None
    assert await store.put("k", b"again", ttl_s=TTL, expect=0) == 1


async def test_an_expired_entry_is_gone(store: Store) -> None:
    await store.put("short", b"a", ttl_s=0.2)
    await store.put("long", b"b", ttl_s=TTL)
    assert await store.get("short") is not None
    await asyncio.sleep(0.35)
    assert await store.get("short") is None
    assert await store.get("long") is not None
    assert await store.put("short", b"new", ttl_s=TTL, expect=1) is None
    assert await store.put("short", b"new", ttl_s=TTL, expect=0) == 1


async def test_a_write_renews_the_time_to_live(store: Store) -> None:
    await store.put("k", b"a", ttl_s=0.2)
    await store.put("k", b"b", ttl_s=TTL)
    await asyncio.sleep(0.35)
    entry = await store.get("k")
    assert entry is not None
    assert (entry.value, entry.version) == (b"b", 2)


async def test_concurrent_compare_and_set_loses_no_update(store: Store) -> None:
    await store.put("uses", str(USES).encode(), ttl_s=TTL)
    successes, conflicts = await spend([store], "uses")
    assert successes == USES
    assert conflicts > 0  # the workers did race
    entry = await store.get("uses")
    assert entry is not None
    assert (entry.value, entry.version) == (b"0", USES + 1)


async def test_a_megabyte_value_survives(store: Store) -> None:
    big = os.urandom(1 << 20)  # NUL bytes and invalid UTF-8 included
    await store.put("k", b"small", ttl_s=TTL)
    assert await store.put("k", big, ttl_s=TTL, expect=1) == 2
    entry = await store.get("k")
    assert entry is not None
    assert entry.value == big


# --- SQLite -------------------------------------------------------------------------------


async def test_sqlite_entries_survive_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "er" / "sessions.sqlite3"  # the directories are made
    first = SqliteStore(path)
    await first.put("k", b"kept", ttl_s=TTL)
    await first.put("k", b"kept", ttl_s=TTL)
    await first.close()
    again = SqliteStore(path)
    try:
        entry = await again.get("k")
        assert entry is not None
        assert (entry.value, entry.version) == (b"kept", 2)
        assert await again.put("k", b"next", ttl_s=TTL, expect=2) == 3
    finally:
        await again.close()


async def test_sqlite_two_stores_on_one_file_lose_no_update(tmp_path: Path) -> None:
    path = tmp_path / "shared.sqlite3"
    stores = [SqliteStore(path), SqliteStore(path)]  # two connections, two threads: two servers
    try:
        await stores[0].put("uses", str(USES).encode(), ttl_s=TTL)
        successes, conflicts = await spend(stores, "uses")
        assert successes == USES
        assert conflicts > 0
        entry = await stores[1].get("uses")
        assert entry is not None
        assert (entry.value, entry.version) == (b"0", USES + 1)
    finally:
        for store in stores:
            await store.close()


SPEND_IN_A_PROCESS = """
import asyncio, sys
from pathlib import Path
from flashlive.store import SqliteStore

async def main() -> None:
    store = SqliteStore(Path(sys.argv[1]))
    await store.get("uses")  # opened: ready
    print("ready", flush=True)
    sys.stdin.readline()  # start together with the others
    spent = refused = 0
    while (entry := await store.get("uses")) is not None and int(entry.value) > 0:
        left = str(int(entry.value) - 1).encode()
        if await store.put("uses", left, ttl_s=60, expect=entry.version) is None:
            refused += 1
        else:
            spent += 1
    await store.close()
    print(spent, refused)

asyncio.run(main())
"""


async def test_sqlite_processes_sharing_a_file_lose_no_update(tmp_path: Path) -> None:
    path = tmp_path / "shared.sqlite3"
    store = SqliteStore(path)
    try:
        await store.put("uses", b"300", ttl_s=TTL)
        command = (sys.executable, "-c", SPEND_IN_A_PROCESS, str(path))
        spenders = [
            await asyncio.create_subprocess_exec(
                *command, stdin=subprocess.PIPE, stdout=subprocess.PIPE
            )
            for _ in range(3)
        ]
        async with asyncio.timeout(30):
            for spender in spenders:
                assert spender.stdout is not None
                assert await spender.stdout.readline() == b"ready\n"
            for spender in spenders:
                assert spender.stdin is not None
                spender.stdin.write(b"go\n")
                spender.stdin.close()
            outputs = [(await p.communicate())[0].split() for p in spenders]
        assert [p.returncode for p in spenders] == [0, 0, 0]
        assert sum(int(spent) for spent, _ in outputs) == 300
        assert sum(int(refused) for _, refused in outputs) > 0  # the processes did race
        entry = await store.get("uses")
        assert entry is not None
        assert (entry.value, entry.version) == (b"0", 301)
    finally:
        await store.close()


async def test_sqlite_expired_rows_are_swept(tmp_path: Path) -> None:
    path = tmp_path / "sessions.sqlite3"
    store = SqliteStore(path)
    await store.put("gone", b"a", ttl_s=0.05)
    await store.put("kept", b"b", ttl_s=TTL)
    await store.close()
    await asyncio.sleep(0.1)
    store = SqliteStore(path)
    try:
        assert await store.get("kept") is not None  # the first use opens the file and sweeps
        with sqlite3.connect(path) as raw:
            keys = [k for (k,) in raw.execute("SELECT key FROM entries")]
        assert keys == ["kept"]
    finally:
        await store.close()


async def test_sqlite_closed_store_is_unavailable(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "sessions.sqlite3")
    await store.put("k", b"a", ttl_s=TTL)
    await store.close()
    await store.close()
    with pytest.raises(Unavailable, match="closed"):
        await store.get("k")


async def test_sqlite_unusable_path_is_unavailable(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a directory")
    store = SqliteStore(tmp_path / "file" / "sessions.sqlite3")
    try:
        with pytest.raises(Unavailable, match="session store"):
            await store.get("k")
    finally:
        await store.close()


# --- Redis --------------------------------------------------------------------------------


async def test_redis_keys_carry_the_prefix(redis_url: str) -> None:
    default, custom = RedisStore(redis_url), RedisStore(redis_url, prefix="other-app:")
    raw = redis.asyncio.Redis.from_url(redis_url)
    try:
        assert default.prefix == "flashlive:"
        await default.put("session-1", b"a", ttl_s=TTL)
        await custom.put("session-1", b"b", ttl_s=TTL)
        assert await raw.exists("flashlive:session-1", "other-app:session-1") == 2
        assert await raw.exists("session-1") == 0
        assert 0 < await raw.pttl("flashlive:session-1") <= TTL * 1000
        entry = await default.get("session-1")
        assert entry is not None
        assert entry.value == b"a"  # the same key under another prefix is another entry
    finally:
        await default.delete("session-1")
        await custom.delete("session-1")
        await raw.aclose()
        await default.close()
        await custom.close()


async def test_redis_unreachable_is_unavailable_without_the_password() -> None:
    port = free_port()  # nothing listens there
    store = RedisStore(f"redis://admin:s3cret@127.0.0.1:{port}/0")
    try:
        for attempt in (store.get("k"), store.put("k", b"a", ttl_s=TTL), store.delete("k")):
            with pytest.raises(Unavailable) as caught:
                await attempt
            assert f"redis://admin:***@127.0.0.1:{port}/0" in caught.value.message
            assert "cannot be reached" in caught.value.message
            assert "s3cret" not in str(caught.value)
    finally:
        await store.close()


# --- choosing a backend -------------------------------------------------------------------


async def test_open_store_by_url(tmp_path: Path) -> None:
    assert isinstance(open_store(None, tmp_path), MemoryStore)
    assert isinstance(open_store("memory", tmp_path), MemoryStore)
    default = open_store("sqlite", tmp_path)
    assert isinstance(default, SqliteStore)
    assert default.path == tmp_path / "sessions.sqlite3"
    chosen = open_store(f"sqlite:///{tmp_path / 'elsewhere.db'}", tmp_path / "unused")
    assert isinstance(chosen, SqliteStore)
    assert chosen.path == tmp_path / "elsewhere.db"
    for url in ("redis://127.0.0.1:6379/0", "rediss://cache.internal:6380", "unix:///run/r.sock"):
        remote = open_store(url, tmp_path)
        assert isinstance(remote, RedisStore)
        await remote.close()
    for store in (default, chosen):
        await store.close()


def test_open_store_rejects_an_unknown_url_without_its_password(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unsupported session store") as caught:
        open_store("memcached://user:hunter2@cache:11211", tmp_path)
    assert "hunter2" not in str(caught.value)
    with pytest.raises(ValueError):
        open_store("sqlite:///", tmp_path)


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
        ("redis://:pw@h:6379/0", "redis://***@h:6379/0"),
        ("redis://user:p%40ss@h/1", "redis://user:***@h/1"),
        ("rediss://lonely@h", "rediss://***@h"),
        ("unix:///run/redis.sock?db=2&password=pw", "unix:///run/redis.sock?db=2&password=***"),
    ],
)
def test_redacted_hides_passwords(url: str, shown: str) -> None:
    assert redacted(url) == shown
