"""The asyncio side of one Live session: it runs the core's actions and moves the bytes.

One TaskGroup per session holds its long-lived tasks:

    receive ──► audio queue ──► listen (VAD, ASR) ──┐
       │                                            ├──► turn queue ──► turns ──► outbox ──► send
       └──── text, clientContent, toolResponse ─────┘

plus the camera, the clock (goAway and the time limit) and the takeover watch. Every decision is
the core's (`live/core.py`): each task hands it what happened and runs the actions it returns.
Every queue between the tasks is bounded. A model turn runs as two tasks of the same group
(`live/answer.py`): a producer that writes into the turn's own queue, and a forwarder that moves
those messages to the outbox once the turn is committed. That split is what lets a turn start
*speculatively* while the user is still in the silence that may end their utterance.

Back-pressure: a client that sends audio faster than it is processed blocks the receive task
(TCP pushes back on it); a client that stops reading fills the outbox, and a turn that cannot
hand it a message for `send_timeout_s` closes the session (1008). Memory per session is
bounded by those queues plus one answer of at most maxOutputTokens.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Coroutine
from datetime import UTC, datetime
from typing import Any, Protocol

from flashlive.errors import FailedPrecondition, FlashliveError, InvalidArgument
from flashlive.ledger.records import ANONYMOUS
from flashlive.live import actions as act
from flashlive.live.answer import ModelTurn, TurnContext
from flashlive.live.camera import Camera
from flashlive.live.core import Opened, SessionCore, contents_to_count
from flashlive.live.counter import TokenCounter
from flashlive.live.frames import AudioIn, UserTurn
from flashlive.live.listener import Listener, ListenerHooks
from flashlive.live.opening import Opening, Prepared
from flashlive.live.resumption import Resumption, new_handle
from flashlive.live.services import Grant, LiveServices
from flashlive.live.session import SavedSession
from flashlive.protocol.content import Content
from flashlive.protocol.live import (
    ClientMessage,
    ServerMessage,
    SessionResumptionUpdate,
    parse_client_message,
)

log = logging.getLogger(__name__)

PREFILL_RETRY_S = 0.5  # a context computed between turns waits this long for an idle engine
INLINE_PARSE_BYTES = 64 * 1024  # larger frames are parsed off the event loop


class Transport(Protocol):
    async def receive(self) -> str | bytes | None:
        """The next frame, or None once the client has gone."""

    async def send(self, text: str) -> None: ...

    async def close(self, code: int, reason: str) -> None: ...


class ClientGone(Exception):
    """The client closed the connection: the session ends quietly."""


class LiveSession:
    def __init__(
        self,
        transport: Transport,
        services: LiveServices,
        *,
        key_hash: str = ANONYMOUS,
        grant: Grant | None = None,
    ) -> None:
        self.id = secrets.token_hex(6)
        self.grant = grant  # set when an ephemeral token opened the session
        # Whom the ledger bills for this session's turns: a token's turns go to its creator.
        self.key_hash = grant.key_hash if grant is not None else key_hash
        self.transport = transport
        self.services = services
        limits = services.limits
        self.core = SessionCore(
            self.id,
            limits,
            now=time.monotonic(),
            key_hash=self.key_hash,
            vision=services.vision is not None,
            quota=services.quota,
        )
        self.outbox: asyncio.Queue[ServerMessage] = asyncio.Queue(limits.outbox_size)
        # The core refuses a turn past this bound before it is queued: `put_nowait` never fails.
        self.turns: asyncio.Queue[UserTurn] = asyncio.Queue(limits.turn_queue_size)
        self.counter = TokenCounter(None)  # the model's, once the setup names it
        self.resumption = Resumption(
            services.store, services.holders, ttl_s=limits.resume_ttl_s, session_id=self.id
        )
        self.camera = Camera(services.vision, self.id)
        hooks = ListenerHooks(self.id, self.spawn, self._run, self._draft, self._warm)
        self.listener = Listener(self.core, services.perception, hooks, limits.audio_queue_size)
        self.prepared: Prepared | None = None
        self.ctx: TurnContext | None = None
        self.tg: asyncio.TaskGroup | None = None
        self._handlers: dict[type[Any], Callable[[Any], Awaitable[None]]] = {
            act.Emit: self._emit_action,
            act.QueueAudio: self._queue_audio,
            act.QueueMark: self._queue_mark,
            act.ShowFrame: self._show_frame,
            act.QueueTurn: self._queue_turn,
            act.Interrupt: self._interrupt,
            act.CancelDraft: self._cancel_draft,
            act.Answer: self._answer,
            act.StartSpeculation: self._start_speculation,
            act.DropSpeculation: self._drop_speculation,
            act.StopWarming: self._stop_warming,
            act.FinishUtterance: self._finish_utterance,
            act.Save: self._save,
            act.AnnounceHandle: self._announce_handle,
            act.PrefillContext: self._prefill,
            act.AwaitTurn: self._await_turn,
            act.Close: self._close,
        }

    # --- lifecycle -------------------------------------------------------------------------

    async def run(self) -> BaseException | None:
        """Serve the session until the client leaves (None) or it must close (the reason why).

        Closing the socket with a code for that reason is the transport layer's job (`api/`).
        """
        failure: BaseException | None = None
        try:
            ready = await self._setup()
            async with asyncio.TaskGroup() as tg:
                self.tg = tg
                await self._run(ready)
                tg.create_task(self._send_loop())
                tg.create_task(self._receive_loop())
                tg.create_task(self.listener.listen())
                tg.create_task(self._turn_loop())
                tg.create_task(
                    self.camera.look(self.core.conversation, self.core.conf.views.max_side)
                )
                tg.create_task(self._clock())
                tg.create_task(self._watch_takeover())
        except* ClientGone:
            log.info("live session %s: client closed", self.id)
        except* Exception as group:
            failure = group.exceptions[0]
        finally:
            self._release()
        return failure

    def _release(self) -> None:
        self.core.ended()
        self.resumption.release()
        config = self.core.config
        if config is None or not config.resumable:
            self.services.generation.forget_state(self.state_key)

    @property
    def state_key(self) -> str:
        """Where the engine keeps this conversation's computed state between turns."""
        return "live:" + (self.resumption.key or self.id)

    async def _setup(self) -> list[act.Action]:
        """Read the setup and open the session for it; the actions that start it come back."""
        raw = await self._first_frame()
        await self._run(self.core.frame_received(len(raw)))
        setup = await self._handle(raw)
        assert isinstance(setup, act.BeginSetup)
        opening = Opening(self.services, self.resumption, self.grant, self.key_hash, self.id)
        prepared = self.prepared = await opening.open(setup.setup)
        self.counter = prepared.counter
        config = prepared.config
        token_left = None
        if self.grant is not None:
            token_left = (self.grant.expire_time - datetime.now(UTC)).total_seconds()
        opened = Opened(
            config,
            prepared.window,
            prepared.conversation,
            resumable=config.resumable,
            resumed=prepared.saved is not None,
            token_left_s=token_left,
        )
        ready = self.core.setup_ready(opened, time.monotonic())
        if config.resumable:
            self.resumption.hold(prepared.resume_handle or new_handle(), self._snapshot)
            await self.resumption.save()
        self.ctx = self._turn_context(prepared)
        window = prepared.window
        log.info(
            "live session %s: model %s, %s out, %s activity detection, %s%s",
            self.id,
            config.model,
            config.modality,
            "automatic" if config.automatic_activity else "manual",
            f"window {window.trigger}→{window.target}"
            if window.trigger is not None
            else f"context limit {window.limit}",
            f", resumed with {len(prepared.conversation.history)} entries"
            if prepared.saved
            else "",
        )
        return ready

    def _turn_context(self, prepared: Prepared) -> TurnContext:
        config = prepared.config
        generation = self.services.generation
        return TurnContext(
            session_id=self.id,
            config=config,
            conversation=self.core.conversation,
            generation=generation,
            resolve_cache=prepared.resolve_cache,
            state_key=self.state_key,
            key_hash=self.key_hash,
            ledger=self.services.ledger,
            tts=self.services.perception.tts,
            image_tokens=config.views.image_tokens(generation.media_tokens.image),
            spawn=self.spawn,
            emit=self.emit,
            answered=self._answered,
        )

    def _snapshot(self) -> SavedSession:
        assert self.prepared is not None
        return SavedSession(self.key_hash, self.prepared.setup, self.core.conversation.state())

    async def _first_frame(self) -> str | bytes:
        while True:
            wake = self.core.next_wakeup()
            assert wake is not None
            try:
                async with asyncio.timeout(max(wake - time.monotonic(), 0.0)):
                    return await self._receive_frame()
            except TimeoutError:
                await self._run(self.core.tick(time.monotonic()))

    # --- the actions ----------------------------------------------------------------------

    async def _run(self, actions: list[act.Action]) -> None:
        for action in actions:
            await self._handlers[type(action)](action)

    async def _close(self, action: act.Close) -> None:
        raise action.error if action.error is not None else ClientGone

    async def _emit_action(self, action: act.Emit) -> None:
        if action.soon:
            self._emit_soon(action.message)
        else:
            await self.emit(action.message)

    async def _queue_audio(self, action: act.QueueAudio) -> None:
        await self.listener.audio.put(AudioIn(action.samples))

    async def _queue_mark(self, action: act.QueueMark) -> None:
        await self.listener.audio.put(action.mark)

    async def _show_frame(self, action: act.ShowFrame) -> None:
        self.camera.show(action.frame)

    async def _queue_turn(self, action: act.QueueTurn) -> None:
        self.turns.put_nowait(action.turn)

    async def _interrupt(self, action: act.Interrupt) -> None:
        turn = action.turn
        assert isinstance(turn, ModelTurn)
        turn.cancel()
        turn.record_usage()

    async def _cancel_draft(self, action: act.CancelDraft) -> None:
        assert isinstance(action.turn, ModelTurn)
        action.turn.cancel()

    async def _start_speculation(self, action: act.StartSpeculation) -> None:
        self.listener.start_speculation(action.sample, action.audio)

    async def _drop_speculation(self, action: act.DropSpeculation) -> None:
        self.listener.drop_speculation()

    async def _stop_warming(self, action: act.StopWarming) -> None:
        self.listener.stop_warming()

    async def _finish_utterance(self, action: act.FinishUtterance) -> None:
        self.listener.finish_utterance(action.audio, action.keep_speculation)

    async def _save(self, action: act.Save) -> None:
        if action.soon:
            # At most one such task waits for the store at a time (`save_in_background`).
            self.spawn(self.resumption.save_in_background())
        else:
            await self.resumption.save()

    async def _announce_handle(self, action: act.AnnounceHandle) -> None:
        update = SessionResumptionUpdate(new_handle=self.resumption.handle, resumable=True)
        await self.emit(ServerMessage(session_resumption_update=update))

    async def _prefill(self, action: act.PrefillContext) -> None:
        # One per window slide; it ends as soon as the history moves on (a newer slide included).
        self.spawn(self._prefill_context(action.version))

    async def _await_turn(self, action: act.AwaitTurn) -> None:
        assert isinstance(action.turn, ModelTurn)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(action.timeout_s):
                await action.turn.finished.wait()

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        assert self.tg is not None
        return self.tg.create_task(coro)

    # --- turns ----------------------------------------------------------------------------

    async def _turn_loop(self) -> None:
        while True:
            pending = await self.turns.get()
            await self._run(self.core.take_turn(pending))

    async def _answer(self, action: act.Answer) -> None:
        assert self.ctx is not None
        pending = action.pending
        turn = action.draft
        if turn is None:
            turn = ModelTurn.start(
                self.ctx,
                pending.user,
                pending.transcript,
                answers_tools=pending.answers_tools,
                committed=True,
            )
            turn.asr_s = pending.asr_s
        assert isinstance(turn, ModelTurn)
        await self._run(self.core.turn_started(turn))
        turn.commit()
        await turn.finished.wait()
        if not turn.interrupted:
            await turn.playback_ends()
        self.core.turn_over(turn)

    async def _answered(self, turn: ModelTurn) -> None:
        await self._run(self.core.answer_sent(turn.text, turn.calls))

    def _draft(self, user: Content, transcript: str) -> ModelTurn:
        assert self.ctx is not None
        return ModelTurn.start(self.ctx, user, transcript)

    async def _warm(self, user: Content | None) -> bool:
        """Compute the context (and `user`'s words) ahead of the turn, if the engine is idle."""
        config = self.core.conf
        assert self.prepared is not None
        return await self.services.generation.warm(
            config.model,
            self.core.conversation.request(config.base, user),
            resolve_cache=self.prepared.resolve_cache,
            state_key=self.state_key,
        )

    async def _prefill_context(self, version: int) -> None:
        while self.core.conversation.version == version:
            if await self._warm(None):
                log.info("live session %s: the shortened context is computed", self.id)
                return
            await asyncio.sleep(PREFILL_RETRY_S)  # the engine is busy: try again when it may not be

    # --- time and takeover ----------------------------------------------------------------

    async def _clock(self) -> None:
        """Wake the core when its clock says so: the goAway notice, then the time limit."""
        while (wake := self.core.next_wakeup()) is not None:
            await asyncio.sleep(max(wake - time.monotonic(), 0.0))
            await self._run(self.core.tick(time.monotonic()))

    async def _watch_takeover(self) -> None:
        await self.resumption.taken_over.wait()
        failure = self.resumption.failure
        if failure is not None and not isinstance(failure, FlashliveError):
            raise failure  # the store failed: an internal error, not a decision
        await self._run(self.core.taken_over(failure))

    # --- out ------------------------------------------------------------------------------

    async def emit(self, message: ServerMessage) -> None:
        # Timeouts here and below are `asyncio.timeout`, never `wait_for`: on Python 3.11
        # `wait_for` loses a cancellation that arrives as its awaitable completes, and a task the
        # session's group cancelled would then go on and spawn into the closing group.
        try:
            async with asyncio.timeout(self.services.limits.send_timeout_s):
                await self.outbox.put(message)
        except TimeoutError:
            raise FailedPrecondition(
                f"the client read nothing for {self.services.limits.send_timeout_s:g} s; "
                "the session is closed"
            ) from None

    def _emit_soon(self, message: ServerMessage) -> None:
        """Queue a message now, ahead of anything a later turn sends.

        When the outbox is full the message waits in a task of its own. Those tasks cannot pile
        up: only a barge-in sends this way, at most twice (interrupted, tool call cancellation)
        for each turn that was answering, and each task ends within `send_timeout_s`, by
        handing its message over or by closing the session.
        """
        try:
            self.outbox.put_nowait(message)
        except asyncio.QueueFull:
            self.spawn(self.emit(message))

    async def _send_loop(self) -> None:
        while True:
            message = await self.outbox.get()
            await self.transport.send(message.to_json())

    # --- in -------------------------------------------------------------------------------

    async def _receive_frame(self) -> str | bytes:
        raw = await self.transport.receive()
        if raw is None:
            await self._run(self.core.client_gone())
            raise ClientGone  # the core is closed already: the client left all the same
        return raw

    async def _receive_loop(self) -> None:
        while True:
            raw = await self._receive_frame()
            await self._run(self.core.frame_received(len(raw)))
            await self._handle(raw)

    async def _handle(self, raw: str | bytes) -> act.Action | None:
        """Parse one frame and run what the core makes of it; the first action comes back."""
        try:
            message = await _parsed(raw)
        except InvalidArgument as exc:
            await self._run(self.core.malformed(exc))
            raise AssertionError("a malformed frame always closes") from exc
        await self.counter.prime(contents_to_count(message))
        actions = self.core.message(message)
        if actions and isinstance(actions[0], act.BeginSetup):
            return actions[0]
        await self._run(actions)
        return actions[0] if actions else None


async def _parsed(raw: str | bytes) -> ClientMessage:
    if len(raw) <= INLINE_PARSE_BYTES:
        return parse_client_message(raw)
    # A frame of megabytes takes a while to parse and check: other sessions go on meanwhile.
    return await asyncio.to_thread(parse_client_message, raw)
