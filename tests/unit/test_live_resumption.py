"""Resumption's store side: background saves coalesce, a newer version elsewhere is a takeover."""

from __future__ import annotations

import asyncio

import pytest

from flashlive.errors import FailedPrecondition
from flashlive.live.resumption import Resumption, store_key
from flashlive.live.session import Conversation, SavedSession
from flashlive.protocol.live import Setup
from flashlive.store import MemoryStore


class SlowStore(MemoryStore):
    """Counts writes; each takes a moment, so saves asked for meanwhile have to wait."""

    def __init__(self) -> None:
        super().__init__()
        self.puts = 0

    async def put(
        self, key: str, value: bytes, *, ttl_s: float, expect: int | None = None
    ) -> int | None:
        self.puts += 1
        await asyncio.sleep(0.01)
        return await super().put(key, value, ttl_s=ttl_s, expect=expect)


def held(store: MemoryStore, conversation: Conversation) -> Resumption:
    resumption = Resumption(store, {}, ttl_s=60.0, session_id="s")
    setup = Setup.model_validate({"model": "models/m"})
    resumption.hold("handle", lambda: SavedSession("k", setup, conversation.state()))
    return resumption


async def test_background_saves_asked_for_while_one_waits_are_one_save() -> None:
    store = SlowStore()
    conversation = Conversation()
    resumption = held(store, conversation)
    async with asyncio.TaskGroup() as tg:
        tg.create_task(resumption.save())  # writing
        await asyncio.sleep(0)
        for i in range(50):  # 50 changes while it writes: one more write holds them all
            conversation.add_client_turns([])
            conversation.dropped_turns = i
            tg.create_task(resumption.save_in_background())
    assert store.puts == 2
    found = await store.get(store_key("handle"))
    assert (
        found is not None
        and SavedSession.from_bytes(found.value).conversation["droppedTurns"] == 49
    )


async def test_a_newer_version_in_the_store_means_the_session_was_taken_over() -> None:
    store = MemoryStore()
    resumption = held(store, Conversation())
    await resumption.save()
    await store.put(store_key("handle"), b"{}", ttl_s=60.0)  # another connection wrote
    with pytest.raises(FailedPrecondition, match="resumed on another connection"):
        await resumption.save()
    assert resumption.taken_over.is_set()
