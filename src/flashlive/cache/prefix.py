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
    ) -> tuple[PrefixState, int] | None:
        """The state to start from and how many prompt tokens it covers (None: none helps)."""
        ...

    async def leave(self, engine: Engine, ask: PrefixAsk) -> None:
        """Keep what the engine holds after `ask`'s prompt, when a later prompt may want it."""
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

    async def restore(
        self, engine: Engine, ask: PrefixAsk, *, own_warming: bool = False
    ) -> tuple[PrefixState, int] | None:
        """The conversation's own state, the cached context's, or that of a recent prompt that
        began the same way: whichever covers most."""
        found: list[tuple[PrefixState, int]] = []
        if ask.cached_key is not None and ask.cached_len > 0:
            found.append((await self._cached(engine, ask, own_warming), ask.cached_len))
        if ask.state_key is not None:
            own = await asyncio.to_thread(self._store.get, ask.state_key)
            if own is not None and own.model == ask.model:
                shared = min(common_prefix(own.tokens, ask.tokens), len(ask.tokens) - 1)
                if shared > 0:
                    found.append((own, shared))
        if not found:
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
        """After a turn of a conversation that keeps its state, or any long prompt, save the
        state: the next turn begins the same way, even if other requests run in between."""
        if ask.state_key is None and len(ask.tokens) < IMPLICIT_MIN_TOKENS:
            return
        state = await engine.snapshot()
        if common_prefix(state.tokens, ask.tokens) < len(ask.tokens) - 1:
            return  # another request ran first: what is held now is not this conversation
        if ask.state_key is not None:
            await asyncio.to_thread(self._store.put, ask.state_key, state)
        elif len(state.tokens) >= IMPLICIT_MIN_TOKENS:
            await asyncio.to_thread(self._store.put, implicit_key(state.tokens), state)

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
        self._store.drop(key)


def implicit_key(tokens: Sequence[int]) -> str:
    """The key a long prompt's state is kept under when nobody named one."""
    return "implicit:" + hashlib.sha256(repr(tuple(tokens)).encode()).hexdigest()[:24]
