"""The cachedContents registry: lifecycle, pagination, expiry, owners and files on disk."""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from flashlive.cache.registry import CacheEntry, CacheRegistry
from flashlive.errors import InvalidArgument, NotFound

START = datetime(2030, 1, 1, tzinfo=UTC)
PAYLOAD: dict[str, Any] = {"contents": [{"role": "user", "parts": [{"text": "a long document"}]}]}
MIN_TOKENS = 32


class FakeClock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def registry(tmp_path: Path, clock: FakeClock) -> CacheRegistry:
    return CacheRegistry(tmp_path, min_tokens=MIN_TOKENS, clock=clock)


def make(reg: CacheRegistry, owner: str = "alice", **kwargs: Any) -> CacheEntry:
    kwargs.setdefault("ttl", timedelta(hours=1))
    return reg.create(owner, "models/gemma-3-270m", PAYLOAD, 100, **kwargs)


def cache_files(tmp_path: Path) -> list[str]:
    return sorted(p.name for p in (tmp_path / "caches").iterdir())


def test_create_then_get(tmp_path: Path, clock: FakeClock) -> None:
    reg = registry(tmp_path, clock)
    entry = make(reg, display_name="docs")
    assert entry.name == f"cachedContents/{entry.id}"
    assert entry.model == "gemma-3-270m"
    assert entry.create_time == entry.update_time == START
    assert entry.expire_time == START + timedelta(hours=1)
    assert reg.get("alice", entry.id) == entry
    assert cache_files(tmp_path) == [f"{entry.id}.json"]


def test_no_expiry_given_means_one_hour(tmp_path: Path, clock: FakeClock) -> None:
    entry = registry(tmp_path, clock).create("alice", "gemma-3-270m", PAYLOAD, 100)
    assert entry.expire_time == START + timedelta(hours=1)


def test_expire_time_is_taken_as_given(tmp_path: Path, clock: FakeClock) -> None:
    at = START + timedelta(days=2)
    entry = make(registry(tmp_path, clock), ttl=None, expire_time=at)
    assert entry.expire_time == at


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"ttl": timedelta(0)}, "ttl must be positive"),
        ({"ttl": timedelta(seconds=-5)}, "ttl must be positive"),
        ({"ttl": timedelta.max}, "ttl is too long"),
        ({"ttl": None, "expire_time": START}, "expireTime must be in the future"),
        ({"expire_time": START + timedelta(hours=2)}, "not both"),
    ],
)
def test_bad_expiry_is_invalid(
    tmp_path: Path, clock: FakeClock, kwargs: dict[str, Any], message: str
) -> None:
    reg = registry(tmp_path, clock)
    with pytest.raises(InvalidArgument, match=message):
        make(reg, **kwargs)
    assert cache_files(tmp_path) == []


def test_fewer_tokens_than_the_minimum_are_refused(tmp_path: Path, clock: FakeClock) -> None:
    reg = registry(tmp_path, clock)
    with pytest.raises(InvalidArgument, match="31 tokens, the minimum is 32"):
        reg.create("alice", "gemma-3-270m", PAYLOAD, MIN_TOKENS - 1)
    assert reg.create("alice", "gemma-3-270m", PAYLOAD, MIN_TOKENS).token_count == MIN_TOKENS


def test_another_owner_sees_nothing(tmp_path: Path, clock: FakeClock) -> None:
    reg = registry(tmp_path, clock)
    entry = make(reg)
    with pytest.raises(NotFound) as theirs:
        reg.get("mallory", entry.id)
    with pytest.raises(NotFound) as missing:
        reg.get("mallory", "0123456789abcdef")
    # The same words for "not yours" and "not there": existence is not revealed.
    assert theirs.value.message.replace(entry.id, "X") == missing.value.message.replace(
        "0123456789abcdef", "X"
    )
    for attempt in (
        lambda: reg.update("mallory", entry.id, ttl=timedelta(hours=9)),
        lambda: reg.delete("mallory", entry.id),
    ):
        with pytest.raises(NotFound):
            attempt()
    assert reg.list("mallory").entries == []
    assert reg.get("alice", entry.id).expire_time == START + timedelta(hours=1)


def test_list_pages_through_one_owners_live_caches(tmp_path: Path, clock: FakeClock) -> None:
    reg = registry(tmp_path, clock)
    mine = []
    for _ in range(5):
        mine.append(make(reg))
        make(reg, owner="bob")
        clock.advance(1)
    make(reg, ttl=timedelta(seconds=1))  # expires before the listing
    clock.advance(2)
    seen: list[CacheEntry] = []
    token: str | None = None
    pages = 0
    while True:
        page = reg.list("alice", page_size=2, page_token=token)
        seen += page.entries
        pages += 1
        token = page.next_page_token
        if token is None:
            break
    assert pages == 3
    assert [e.id for e in seen] == [e.id for e in mine]  # oldest first, none twice


def test_a_page_token_survives_deleting_its_last_entry(tmp_path: Path, clock: FakeClock) -> None:
    reg = registry(tmp_path, clock)
    entries = []
    for _ in range(3):
        entries.append(make(reg))
        clock.advance(1)
    page = reg.list("alice", page_size=1)
    reg.delete("alice", entries[0].id)
    rest = reg.list("alice", page_size=10, page_token=page.next_page_token)
    assert [e.id for e in rest.entries] == [entries[1].id, entries[2].id]
    assert rest.next_page_token is None


def test_page_size_defaults_and_limits(tmp_path: Path, clock: FakeClock) -> None:
    reg = registry(tmp_path, clock)
    make(reg)
    assert len(reg.list("alice", page_size=None).entries) == 1
    assert len(reg.list("alice", page_size=5000).entries) == 1
    with pytest.raises(InvalidArgument, match="pageSize"):
        reg.list("alice", page_size=-1)
    for token in ("!!!", "bm90IGEgdG9rZW4", "MjAzMHxub3QtYW4taWQ"):
        with pytest.raises(InvalidArgument, match="pageToken"):
            reg.list("alice", page_token=token)


def test_update_moves_the_expiry_and_update_time(tmp_path: Path, clock: FakeClock) -> None:
    reg = registry(tmp_path, clock)
    entry = make(reg)
    clock.advance(60)
    updated = reg.update("alice", entry.id, ttl=timedelta(hours=2))
    assert updated.update_time == START + timedelta(seconds=60)
    assert updated.expire_time == START + timedelta(hours=2, seconds=60)
    assert updated.create_time == START
    at = START + timedelta(days=3)
    assert reg.update("alice", entry.id, expire_time=at).expire_time == at
    with pytest.raises(InvalidArgument, match="either ttl or expireTime"):
        reg.update("alice", entry.id)
    with pytest.raises(InvalidArgument, match="not both"):
        reg.update("alice", entry.id, ttl=timedelta(hours=1), expire_time=at)
    assert registry(tmp_path, clock).get("alice", entry.id).expire_time == at  # on disk too


def test_concurrent_updates_leave_the_file_equal_to_memory(
    tmp_path: Path, clock: FakeClock
) -> None:
    reg = registry(tmp_path, clock)
    entry = make(reg)

    def extend(hours: int) -> None:
        for _ in range(20):
            reg.update("alice", entry.id, ttl=timedelta(hours=hours))

    threads = [threading.Thread(target=extend, args=(h,)) for h in range(1, 9)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert registry(tmp_path, clock).get("alice", entry.id) == reg.get("alice", entry.id)
    assert cache_files(tmp_path) == [f"{entry.id}.json"]  # no temp file left behind


def test_delete_frees_the_file_and_tells_the_callbacks(tmp_path: Path, clock: FakeClock) -> None:
    reg = registry(tmp_path, clock)
    freed: list[str] = []
    reg.on_delete(lambda e: freed.append(e.id))
    entry = make(reg)
    reg.delete("alice", entry.id)
    assert freed == [entry.id]
    assert cache_files(tmp_path) == []
    with pytest.raises(NotFound):
        reg.get("alice", entry.id)
    with pytest.raises(NotFound):
        reg.delete("alice", entry.id)


def test_a_failing_callback_does_not_undo_the_delete(
    tmp_path: Path, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    reg = registry(tmp_path, clock)
    freed: list[str] = []

    def broken(entry: CacheEntry) -> None:
        raise RuntimeError("state store down")

    reg.on_delete(broken)
    reg.on_delete(lambda e: freed.append(e.id))
    entry = make(reg)
    reg.delete("alice", entry.id)
    assert freed == [entry.id]
    assert entry.id not in reg.known_ids()
    assert "on_delete callback failed" in caplog.text


def test_expired_caches_are_gone_then_swept(tmp_path: Path, clock: FakeClock) -> None:
    reg = registry(tmp_path, clock)
    freed: list[str] = []
    reg.on_delete(lambda e: freed.append(e.id))
    short = make(reg, ttl=timedelta(seconds=10))
    long = make(reg, ttl=timedelta(hours=1))
    clock.advance(10)
    with pytest.raises(NotFound):
        reg.get("alice", short.id)  # at the expire time exactly, it is gone
    with pytest.raises(NotFound):
        reg.update("alice", short.id, ttl=timedelta(hours=1))  # too late to extend
    assert [e.id for e in reg.expired()] == [short.id]
    assert [e.id for e in reg.sweep()] == [short.id]
    assert freed == [short.id]
    assert cache_files(tmp_path) == [f"{long.id}.json"]
    assert reg.sweep() == []


def test_restart_reloads_every_cache(tmp_path: Path, clock: FakeClock) -> None:
    reg = registry(tmp_path, clock)
    first = make(reg, display_name="one")
    second = make(reg, owner="bob", ttl=None, expire_time=START + timedelta(days=1))
    again = registry(tmp_path, clock)
    assert again.get("alice", first.id) == first
    assert again.get("bob", second.id) == second
    assert again.get("alice", first.id).payload == PAYLOAD
    assert again.known_ids() == {first.id, second.id}


def test_an_expired_cache_reloads_only_to_be_swept(tmp_path: Path, clock: FakeClock) -> None:
    entry = make(registry(tmp_path, clock), ttl=timedelta(seconds=5))
    clock.advance(5)
    again = registry(tmp_path, clock)
    freed: list[str] = []
    again.on_delete(lambda e: freed.append(e.id))  # registered after the load, still told
    with pytest.raises(NotFound):
        again.get("alice", entry.id)
    again.sweep()
    assert freed == [entry.id]
    assert cache_files(tmp_path) == []


def test_corrupt_and_partial_files_are_deleted_at_start(
    tmp_path: Path, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    good = make(registry(tmp_path, clock))
    folder = tmp_path / "caches"
    whole = (folder / f"{good.id}.json").read_text()
    (folder / "0000000000000001.json").write_text(whole[: len(whole) // 2])  # torn write
    (folder / "0000000000000002.json").write_text("not json at all")
    (folder / "0000000000000003.json").write_text(whole)  # holds another id
    (folder / "0000000000000004.json").write_text(whole.replace('"token_count":100', '"x":1'))
    (folder / f".{good.id}.abcd.tmp").write_text(whole)  # a write interrupted before its rename
    (folder / "kv").mkdir()  # a folder is somebody else's: left alone
    with caplog.at_level(logging.WARNING):
        again = registry(tmp_path, clock)
    assert again.known_ids() == {good.id}
    assert cache_files(tmp_path) == [f"{good.id}.json", "kv"]
    assert caplog.text.count("deleting") == 5


def test_a_failed_write_leaves_no_trace(
    tmp_path: Path, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    reg = registry(tmp_path, clock)

    def disk_full(src: object, dst: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", disk_full)
    with pytest.raises(OSError):
        make(reg)
    assert reg.known_ids() == frozenset()
    assert cache_files(tmp_path) == []


async def test_the_sweeper_runs_until_cancelled(tmp_path: Path, clock: FakeClock) -> None:
    reg = registry(tmp_path, clock)
    swept = asyncio.Event()
    reg.on_delete(lambda e: swept.set())  # on the loop: an asyncio.Event needs no more
    make(reg, ttl=timedelta(seconds=1))
    task = asyncio.create_task(reg.run_sweeper(0.01))
    clock.advance(2)
    await asyncio.wait_for(swept.wait(), timeout=5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert cache_files(tmp_path) == []
