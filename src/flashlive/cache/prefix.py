"""Which saved engine state a prompt starts from, and which state a finished prompt leaves.

The policy over the store of `kv.py`: a prompt may begin with a cached context (a
cachedContents resource, saved under its own key), belong to a conversation that keeps its state
between turns (a Live session's key), or merely begin like a recent long prompt (an implicit
key). An engine that keeps a prefix cache of its own takes this over by implementing
`PrefixPolicy` itself.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from flashlive.cache.kv import PrefixStore
from flashlive.engine import Engine, PrefixState, common_prefix

log = logging.getLogger(__name__)

# A prompt at least this long leaves its state behind for later requests that begin the same way.
IMPLICIT_MIN_TOKENS = 1024


@dataclass(frozen=True)
class PrefixAsk:
    """What one prompt may start from and leave behind."""

    model: str
    tokens: Sequence[int]
    cached_key: str | None = None  # the cached context the prompt begins with ...
    cached_len: int = 0  # ... and how many of its tokens are that context's
    state_key: str | None = None  # a conversation that keeps its own state between turns


class PrefixPolicy(Protocol):
    async def restore(
        self, engine: Engine, ask: PrefixAsk, *, own_warming: bool = False
    ) -> tuple[PrefixState | None, int] | None:
        """The state to start from and how many prompt tokens it covers (None: none helps; a
        None state: the engine holds those tokens already)."""
        ...

    async def leave(self, engine: Engine, ask: PrefixAsk) -> None:
        """Keep the engine's sequence for `ask`'s prompt, when a later prompt may want it."""
        ...

    def keeper(self, ask: PrefixAsk) -> Callable[[PrefixState], None] | None:
        """What takes the state of `ask`'s sequence should the engine evict it (None: no
        later prompt is likely to want it); given to the engine with the generation."""
        ...

    def warm_soon(self, key: str, work: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """Compute a cached context's state in the background; `restore` waits for it."""
        ...

    def forget(self, key: str) -> None:
        """A cached context deleted, a conversation ended: its state is not worth its memory."""
        ...


class StoredPrefixes:
    """The default policy: states in a `PrefixStore`, restored whichever covers most."""

    def __init__(self, store: PrefixStore) -> None:
        self._store = store
        # One task per cached context being computed: no more than the cache registry holds.
        self._warming: dict[str, asyncio.Task[None]] = {}
        # Conversations whose sequences the engine keeps for them: one per open Live session.
        self._kept: set[str] = set()

    async def restore(
        self, engine: Engine, ask: PrefixAsk, *, own_warming: bool = False
    ) -> tuple[PrefixState | None, int] | None:
        """What the engine holds already, the conversation's own state, the cached context's,
        or that of a recent prompt that began the same way: whichever covers most."""
        found: list[tuple[PrefixState | None, int]] = []
        held = min(engine.resident(ask.tokens), len(ask.tokens) - 1)
        if held > 0 and (ask.state_key is not None or held >= IMPLICIT_MIN_TOKENS):
            found.append((None, held))  # first: of equal cover, no copy at all wins
        if ask.cached_key is not None and ask.cached_len > 0:
            found.append((await self._cached(engine, ask, own_warming), ask.cached_len))
        if ask.state_key is not None:
            own = await asyncio.to_thread(self._store.get, ask.state_key)
            if own is not None and own.model == ask.model:
                shared = min(common_prefix(own.tokens, ask.tokens), len(ask.tokens) - 1)
                if shared > 0:
                    found.append((own, shared))
        if not any(state is not None for state, _ in found):
            recent = self._store.best_match(ask.model, ask.tokens, minimum=IMPLICIT_MIN_TOKENS)
            if recent is not None:
                found.append(recent)
        return max(found, key=lambda pair: pair[1], default=None)

    async def _cached(self, engine: Engine, ask: PrefixAsk, own_warming: bool) -> PrefixState:
        """The cached context's state, computed (once) when it is not saved yet."""
        assert ask.cached_key is not None
        want = list(ask.tokens[: ask.cached_len])
        warming = self._warming.get(ask.cached_key)
        if warming is not None and not own_warming:
            await asyncio.shield(warming)
        state = await asyncio.to_thread(self._store.get, ask.cached_key)
        if state is None or list(state.tokens) != want:
            state = await engine.snapshot(want)
            await asyncio.to_thread(self._store.put, ask.cached_key, state)
        return state

    async def leave(self, engine: Engine, ask: PrefixAsk) -> None:
        """After a turn of a conversation that keeps its state, or any long prompt, the engine
        keeps its sequence resident; the state is copied out (into the store) only when the
        engine evicts it to make room, so the next turn begins from it wherever it is."""
        keeper = self.keeper(ask)
        if keeper is not None:
            engine.retain(ask.tokens, keeper)  # False: another request took the sequence first

    def keeper(self, ask: PrefixAsk) -> Callable[[PrefixState], None] | None:
        key = ask.state_key
        if key is None and len(ask.tokens) < IMPLICIT_MIN_TOKENS:
            return None
        if key is not None:
            self._kept.add(key)
        return lambda state: self._keep(key, state)

    def _keep(self, key: str | None, state: PrefixState) -> None:
        """Store an evicted sequence's state. On the engine's thread, before the eviction
        completes, so the next turn finds it (the store is thread-safe; a spill to disk
        delays that one step)."""
        if key is None:
            if len(state.tokens) >= IMPLICIT_MIN_TOKENS:
                self._store.put(implicit_key(state.tokens), state)
        elif key in self._kept:  # not for a conversation that has ended meanwhile
            self._store.put(key, state)

    def warm_soon(self, key: str, work: Callable[[], Coroutine[Any, Any, None]]) -> None:
        if key in self._warming:
            return

        async def warm() -> None:
            try:
                await work()
            except Exception:
                log.exception("computing the state of %s failed; it is computed on use", key)
            finally:
                self._warming.pop(key, None)

        self._warming[key] = asyncio.create_task(warm())

    def forget(self, key: str) -> None:
        self._kept.discard(key)
        self._store.drop(key)


def implicit_key(tokens: Sequence[int]) -> str:
    """The key a long prompt's state is kept under when nobody named one."""
    return "implicit:" + hashlib.sha256(repr(tuple(tokens)).encode()).hexdigest()[:24]
