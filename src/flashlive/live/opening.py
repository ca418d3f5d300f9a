"""Opening a Live session for its setup: the grant, resumption, the models, the context window.

Everything here may wait (the store, model loads, counting a long history); what the setup
means is decided by `LiveConfig` and `Window`, and what follows by the core.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, replace

from flashlive.errors import FailedPrecondition
from flashlive.generation.service import CacheResolver
from flashlive.live.counter import TokenCounter
from flashlive.live.frames import user_text
from flashlive.live.resumption import Resumption
from flashlive.live.services import Grant, LiveServices
from flashlive.live.session import Conversation, LiveConfig, SavedSession, Window
from flashlive.protocol.live import ResponseModality, Setup

log = logging.getLogger(__name__)

ANSWER_RESERVE = 1024  # context kept free for an answer when maxOutputTokens is not set


@dataclass
class Prepared:
    setup: Setup  # as in force: the token's locks imposed, or as resumed
    config: LiveConfig
    window: Window
    conversation: Conversation
    counter: TokenCounter
    resolve_cache: CacheResolver | None
    saved: SavedSession | None  # the session resumed, if any
    resume_handle: str | None  # the handle the client resumed with


@dataclass
class Opening:
    services: LiveServices
    resumption: Resumption
    grant: Grant | None
    key_hash: str
    session_id: str

    async def open(self, setup: Setup) -> Prepared:
        if self.grant is not None:
            setup = self.grant.constrain(setup)
        resume = setup.session_resumption.handle if setup.session_resumption else None
        saved = await self.resumption.resume(resume, setup, self.key_hash) if resume else None
        if saved is not None:
            setup = saved.setup.model_copy(update={"session_resumption": setup.session_resumption})
        if self.grant is not None:
            await self.grant.admit(resuming=saved is not None)
        config = LiveConfig.from_setup(setup)
        loaded = await self.services.models.get(config.model)  # NotFound → 1008 with its message
        config = replace(config, model=loaded.spec.id)  # an alias's turns name the real model
        resolve_cache = await self._cache(config)
        await self._perception(config)
        engine = loaded.engine
        window = _window(setup, config, engine.info.context_size)
        counter = TokenCounter(engine)
        probe = user_text("x")
        prepared = await self.services.generation.prepare(
            config.model,
            config.base.model_copy(update={"contents": [probe]}),
            resolve_cache=resolve_cache,
        )
        conversation = await self._conversation(saved, counter)
        conversation.base_tokens = max(len(prepared.tokens) - counter(probe), 0)
        return Prepared(setup, config, window, conversation, counter, resolve_cache, saved, resume)

    async def _cache(self, config: LiveConfig) -> CacheResolver | None:
        if not config.base.cached_content:
            return None
        if self.services.caches is None:
            raise FailedPrecondition("cachedContent is not available on this server")
        resolve_cache = self.services.caches(self.key_hash)
        await resolve_cache(config.base.cached_content)  # NotFound → 1008
        return resolve_cache

    async def _perception(self, config: LiveConfig) -> None:
        perception = self.services.perception
        await perception.vad.get()
        await perception.asr.get()
        if config.modality is ResponseModality.AUDIO:
            await perception.tts.get()

    async def _conversation(
        self, saved: SavedSession | None, counter: TokenCounter
    ) -> Conversation:
        if saved is None:
            return Conversation(count=counter)
        try:
            # A long history takes a while to count: not on the event loop.
            return await asyncio.to_thread(Conversation.from_state, saved.conversation, counter)
        except ValueError as exc:
            log.warning("live session %s: %s", self.session_id, exc)
            raise FailedPrecondition("the session to resume could not be read") from None


def _window(setup: Setup, config: LiveConfig, context: int) -> Window:
    generation = config.base.generation_config
    reserve = min(
        (generation.max_output_tokens if generation else None) or ANSWER_RESERVE, context // 4
    )
    return Window.from_setup(
        setup.context_window_compression, context_size=context, reserve=reserve
    )
