"""Listening: the audio queue, the VAD or the client's activity signals, warming, speculation.

The listener turns audio into user turns. What each VAD event means for the session (barge-in,
a draft started, kept or dropped) is the core's decision; the listener runs the models and the
tasks it asks for: transcribing, prefilling the words heard so far, drafting during a pause.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any

import numpy as np

from flashlive.live.actions import Action
from flashlive.live.answer import ModelTurn
from flashlive.live.core import SessionCore
from flashlive.live.frames import (
    ACTIVITY_END,
    ACTIVITY_START,
    FLUSH,
    AudioIn,
    Mark,
    UserTurn,
    user_text,
)
from flashlive.live.services import Perception
from flashlive.perception.audio import INPUT_RATE
from flashlive.perception.vad import SpeechStarted, VadEvent, VadStream
from flashlive.protocol.content import Content

log = logging.getLogger(__name__)

MAX_UTTERANCE_S = 30.0  # manual activity longer than this is cut (Whisper's window)
WARM_EVERY_S = 0.6  # while the user speaks, prefill their words so far this often


@dataclass
class Speculation:
    sample: int  # where the voiced audio it transcribed ends, on the session's 16 kHz clock
    task: asyncio.Task[ModelTurn | None]

    def cancel(self) -> None:
        if self.task.done() and not self.task.cancelled() and self.task.exception() is None:
            turn = self.task.result()
            if turn is not None:
                turn.cancel()
        self.task.cancel()

    async def result(self) -> ModelTurn | None:
        await asyncio.wait([self.task])  # a cancelled draft is no draft; cancelling us still works
        return None if self.task.cancelled() else self.task.result()


@dataclass
class ListenerHooks:
    """What the listener asks of its session."""

    session_id: str
    spawn: Callable[[Coroutine[Any, Any, Any]], asyncio.Task[Any]]
    run: Callable[[list[Action]], Awaitable[None]]  # carry out the core's actions
    draft: Callable[[Content, str], ModelTurn]  # start answering a speculative user turn
    warm: Callable[[Content | None], Awaitable[bool]]  # prefill the context and these words


class Listener:
    def __init__(
        self, core: SessionCore, perception: Perception, hooks: ListenerHooks, queue_size: int
    ) -> None:
        self.core = core
        self.perception = perception
        self.hooks = hooks
        self.audio: asyncio.Queue[AudioIn | Mark] = asyncio.Queue(queue_size)
        self.vad: VadStream | None = None  # once listening has begun
        self.in_activity: list[np.ndarray] | None = None
        self.speculation: Speculation | None = None
        self.warming: asyncio.Task[None] | None = None
        self.warmed_samples = 0
        self.last_asr_compute_s = 0.0
        self.finish_lock = asyncio.Lock()

    async def listen(self) -> None:
        config = self.core.conf
        vad = self.vad = VadStream(await self.perception.vad.get(), config.vad)
        while True:
            item = await self.audio.get()
            if isinstance(item, AudioIn):
                self.core.samples_in += item.samples.size
                if config.automatic_activity:
                    for event in await asyncio.to_thread(vad.feed, item.samples):
                        await self._on_vad(event)
                    self._maybe_warm(vad)
                elif self.in_activity is not None:
                    self.in_activity.append(item.samples)
                    if sum(a.size for a in self.in_activity) >= MAX_UTTERANCE_S * INPUT_RATE:
                        self._end_activity()
            elif item is FLUSH:
                if config.automatic_activity:
                    for event in vad.flush():
                        await self._on_vad(event)
                elif self.in_activity is not None:
                    self._end_activity()
            elif item is ACTIVITY_START:
                await self.hooks.run(self.core.activity_start())
                self.in_activity = []
            elif item is ACTIVITY_END and self.in_activity is not None:
                self._end_activity()

    async def _on_vad(self, event: VadEvent) -> None:
        if isinstance(event, SpeechStarted):
            self.warmed_samples = 0
        await self.hooks.run(self.core.vad_event(event))

    def _end_activity(self) -> None:
        audio = np.concatenate(self.in_activity) if self.in_activity else np.zeros(0, np.float32)
        self.in_activity = None
        self.core.activity_end()
        if audio.size:
            # As in `finish_utterance`; here the client's signals set the pace, one utterance
            # per activityStart / activityEnd pair, each carried in by the bounded audio queue.
            self.hooks.spawn(self._finish_utterance(audio, None))

    # --- what the core asks for -----------------------------------------------------------

    def start_speculation(self, sample: int, audio: np.ndarray) -> None:
        # One per pause; the core drops the one before whenever speech resumes or ends.
        self.speculation = Speculation(sample, self.hooks.spawn(self._speculate(audio)))

    def drop_speculation(self) -> None:
        if self.speculation is not None:
            self.speculation.cancel()
            self.speculation = None

    def stop_warming(self) -> None:
        if self.warming is not None:
            self.warming.cancel()
            self.warming = None

    def finish_utterance(self, audio: np.ndarray, keep_speculation: bool) -> None:
        speculation = self.speculation if keep_speculation else None
        self.speculation = None
        # One task per utterance, waiting its turn on `finish_lock`. Each becomes a user turn,
        # and the core closes the session once more turns wait than the turn queue holds; the
        # utterances still being transcribed before that are bounded only by the VAD's pace
        # (an utterance lasts at least its start and silence times).
        self.hooks.spawn(self._finish_utterance(audio, speculation))

    # --- tasks ----------------------------------------------------------------------------

    def _maybe_warm(self, vad: VadStream) -> None:
        """Prefill the words heard so far while the user is still speaking: when they stop,
        only the last few words are new to the model."""
        if not vad.in_speech or not self.core.may_warm():
            return
        transcriber = self.perception.asr.value
        if transcriber is None or not transcriber.idle:
            return  # other sessions' final words come first
        if self.warming is not None and not self.warming.done():
            return
        audio = vad.utterance()
        if audio is None or audio.size < self.warmed_samples + WARM_EVERY_S * INPUT_RATE:
            return
        self.warmed_samples = audio.size
        self.warming = self.hooks.spawn(self._warm(audio))  # one at a time (checked above)

    async def _warm(self, audio: np.ndarray) -> None:
        text = await self._transcribe(audio)
        if text and self.core.active is None:
            began = time.monotonic()
            done = await self.hooks.warm(user_text(text))
            log.debug(
                "live session %s: warmed %r: %s in %.3f s",
                self.hooks.session_id,
                text,
                "done" if done else "skipped",
                time.monotonic() - began,
            )

    async def _transcribe(self, audio: np.ndarray) -> str:
        transcriber = await self.perception.asr.get()
        result = await transcriber.transcribe(self.hooks.session_id, audio)
        self.last_asr_compute_s = result.compute_seconds
        return result.text.strip()

    async def _speculate(self, audio: np.ndarray) -> ModelTurn | None:
        """Transcribe and start answering during the silence that may end the utterance."""
        began = time.monotonic()
        text = await self._transcribe(audio)
        if not text:
            return None
        turn = self.hooks.draft(user_text(text), text)
        turn.asr_s = turn.started - began
        turn.asr_compute_s = self.last_asr_compute_s
        turn.draft = True
        return turn

    async def _finish_utterance(self, audio: np.ndarray, speculation: Speculation | None) -> None:
        # Utterances end in order: a short one must not overtake the long one before it.
        async with self.finish_lock:
            draft = await speculation.result() if speculation is not None else None
            if draft is not None:
                turn = UserTurn(draft.user, draft.transcript, draft=draft)
                await self.hooks.run(self.core.utterance(turn))
                return
            began = time.monotonic()
            text = await self._transcribe(audio)
            if text:
                turn = UserTurn(user_text(text), transcript=text)
                turn.asr_s = time.monotonic() - began
                await self.hooks.run(self.core.utterance(turn))
