"""The asyncio side of one Live session: tasks, queues and models around `live/session.py`.

One TaskGroup per session holds four long-lived tasks:

    receive ──► audio queue ──► listen (VAD, ASR) ──┐
       │                                            ├──► turn queue ──► turns ──► outbox ──► send
       └──── text, clientContent, toolResponse ─────┘

Every queue between them is bounded. A model turn runs as two tasks of the same group: a
producer (text generation, and speech synthesis clause by clause) that writes into the turn's
own queue, and a forwarder that moves those messages to the outbox once the turn is committed.
That split is what lets a turn start *speculatively* while the user is still in the silence
that may end their utterance: its output waits, unsent, until the silence is long enough (then
it is released at once) or the user speaks again (then it is dropped).

Back-pressure: a client that sends audio faster than it is processed blocks the receive task
(TCP pushes back on it); a client that stops reading fills the outbox, and a turn that cannot
hand it a message for `send_timeout_s` closes the session (1008). Memory per session is
bounded by those queues plus one answer of at most maxOutputTokens.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import logging
import math
import secrets
import time
import uuid
from collections import OrderedDict
from collections.abc import Coroutine
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Protocol

import numpy as np

from flashlive.errors import (
    DeadlineExceeded,
    FailedPrecondition,
    FlashliveError,
    InvalidArgument,
    PayloadTooLarge,
    PermissionDenied,
)
from flashlive.generation.service import CacheResolver
from flashlive.ledger.records import ANONYMOUS, UsageRecord, UsageSink, utc_now
from flashlive.live.services import Grant, LiveServices
from flashlive.live.session import (
    MESSAGE_OVERHEAD,
    Conversation,
    LiveConfig,
    SavedSession,
    SpokenLog,
    Window,
    content_pieces,
)
from flashlive.perception.audio import (
    INPUT_RATE,
    OUTPUT_RATE,
    Resampler,
    parse_pcm_mime,
    pcm16_to_float,
)
from flashlive.perception.mime import mime_base
from flashlive.perception.speech_text import ClauseSplitter, speakable
from flashlive.perception.vad import (
    SpeechEnded,
    SpeechPaused,
    SpeechResumed,
    SpeechStarted,
    VadEvent,
    VadStream,
)
from flashlive.perception.vision import IMAGE_MIMES, SceneWatch, decode_image, fit
from flashlive.protocol.base import blob_bytes, model_id
from flashlive.protocol.content import (
    Blob,
    Content,
    FunctionCall,
    FunctionCallingConfig,
    FunctionCallingMode,
    Part,
    Role,
    ToolConfig,
)
from flashlive.protocol.decisions import first_refusal
from flashlive.protocol.generate import (
    GenerateContentRequest,
    Modality,
    ModalityTokenCount,
    UsageMetadata,
)
from flashlive.protocol.live import (
    ClientContent,
    ClientMessage,
    GoAway,
    LiveUsageMetadata,
    RealtimeInput,
    ResponseModality,
    ServerContent,
    ServerMessage,
    SessionResumptionUpdate,
    Setup,
    SetupComplete,
    ToolCall,
    ToolCallCancellation,
    Transcription,
    parse_client_message,
)

log = logging.getLogger(__name__)

AUDIO_CHUNK_S = 0.5  # spoken answers leave in pieces this long, so playback starts early
MAX_UTTERANCE_S = 30.0  # manual activity longer than this is cut (Whisper's window)
WARM_EVERY_S = 0.6  # while the user speaks, prefill their words so far this often
FIRST_PIECE_WORDS = 3  # speech starts after this many words, even mid-sentence
ANSWER_RESERVE = 1024  # context kept free for an answer when maxOutputTokens is not set
PREFILL_RETRY_S = 0.5  # a context computed between turns waits this long for an idle engine
TAKEOVER_WAIT_S = 5.0  # how long a resumed session waits for its old connection to end
INLINE_PARSE_BYTES = 64 * 1024  # larger frames are parsed off the event loop
LONG_TEXT_CHARS = 4096  # longer texts are tokenized off the event loop, ahead of their use
LONG_TEXTS_KEPT = 64  # their counts, remembered for the turns still waiting to be committed


class Transport(Protocol):
    async def receive(self) -> str | bytes | None:
        """The next frame, or None once the client has gone."""

    async def send(self, text: str) -> None: ...

    async def close(self, code: int, reason: str) -> None: ...


class ClientGone(Exception):
    """The client closed the connection: the session ends quietly."""


@dataclass(frozen=True)
class Frame:
    data: bytes  # an encoded image
    mime: str
    at: float  # seconds into the session's audio when it arrived


@dataclass(frozen=True)
class AudioIn:
    samples: np.ndarray  # float32 at 16 kHz


class Mark:
    """In-band signals on the audio queue, kept in order with the audio around them."""


FLUSH, ACTIVITY_START, ACTIVITY_END = Mark(), Mark(), Mark()


@dataclass
class UserTurn:
    user: Content | None  # None: the turn is the pending clientContent
    transcript: str | None = None
    draft: ModelTurn | None = None
    answers_tools: bool = False
    asr_s: float | None = None


@dataclass
class Spoken:
    """A clause that was sent as audio: kept in the turn's queue in order with its audio."""

    text: str
    seconds: float


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
        self.resolve_cache: CacheResolver | None = None
        self.transport = transport
        self.services = services
        limits = services.limits
        self.outbox: asyncio.Queue[ServerMessage] = asyncio.Queue(limits.outbox_size)
        self.audio: asyncio.Queue[AudioIn | Mark] = asyncio.Queue(limits.audio_queue_size)
        self.turns: asyncio.Queue[UserTurn] = asyncio.Queue(limits.turn_queue_size)
        self.conversation = Conversation()
        self.counter = TokenCounter(None)  # the model's, once the setup names it
        self.config: LiveConfig | None = None
        self.tg: asyncio.TaskGroup | None = None
        self.active: ModelTurn | None = None  # the committed turn being answered or played
        self.speculation: Speculation | None = None
        self.finish_lock = asyncio.Lock()
        self.resampler: Resampler | None = None  # for the rate the client sends at now
        self.resampler_rate = INPUT_RATE
        self.samples_in = 0  # 16 kHz samples received: the session's audio clock
        self.in_activity: list[np.ndarray] | None = None
        self.vad: VadStream | None = None  # once listening has begun
        self.history_open = False  # historyConfig: the client is still sending the history
        self.warming: asyncio.Task[None] | None = None
        self.frames: asyncio.Queue[Frame] = asyncio.Queue(1)  # the newest camera frame only
        self.frames_seen = 0
        self.frames_dropped = 0
        self.last_asr_compute_s = 0.0
        self.warmed_samples = 0
        self.opened = time.monotonic()
        self.setup: Setup | None = None  # as in force: the token's locks, or as resumed
        self.window: Window | None = None
        # Resumption: the handle the client resumes with, the store key it names, the version
        # of the saved state this connection last wrote (a newer one means it was resumed
        # elsewhere), and the event that ends this connection when that happens.
        self.handle: str | None = None
        self.store_key: str | None = None
        self.state_version = 0
        self.save_lock = asyncio.Lock()
        self.taken_over = asyncio.Event()
        self.save_failure: BaseException | None = None
        self.ended = asyncio.Event()

    # --- lifecycle -------------------------------------------------------------------------

    async def run(self) -> BaseException | None:
        """Serve the session until the client leaves (None) or it must close (the reason why).

        Closing the socket with a code for that reason is the transport layer's job (`api/`).
        """
        failure: BaseException | None = None
        try:
            self.config = await self._setup()
            async with asyncio.TaskGroup() as tg:
                self.tg = tg
                tg.create_task(self._send_loop())
                tg.create_task(self._receive_loop())
                tg.create_task(self._listen_loop())
                tg.create_task(self._turn_loop())
                tg.create_task(self._look_loop())
                tg.create_task(self._deadline())
                tg.create_task(self._watch_takeover())
                if self.conversation.answer_owed:
                    # Resumed after a drop between a user turn and its answer: answer it now.
                    await self._user_turn(UserTurn(None))
        except* ClientGone:
            log.info("live session %s: client closed", self.id)
        except* Exception as group:
            failure = group.exceptions[0]
        finally:
            self._release()
        return failure

    def _release(self) -> None:
        self.ended.set()
        key = self.store_key
        if key is not None and self.services.holders.get(key) == self._end_for_takeover:
            del self.services.holders[key]
        if self.config is None or not self.config.resumable:
            self.services.generation.forget_state(self._state_key)

    async def _setup(self) -> LiveConfig:
        waited = self.services.limits.setup_timeout_s
        try:
            async with asyncio.timeout(waited):
                raw = await self._receive_frame()
        except TimeoutError:
            raise FailedPrecondition(f"no setup arrived within {waited:g} s") from None
        try:
            message = await _parsed(raw)
        except InvalidArgument as exc:
            raise FailedPrecondition("invalid setup: " + exc.message.split(". ", 1)[-1]) from None
        if message.setup is None:
            raise FailedPrecondition(f"the first message must be setup, not {message.kind}")
        setup = message.setup
        if self.grant is not None:
            setup = self.grant.constrain(setup)
        resume = setup.session_resumption.handle if setup.session_resumption else None
        saved = await self._resume(resume, setup) if resume else None
        if saved is not None:
            setup = saved.setup.model_copy(update={"session_resumption": setup.session_resumption})
        if self.grant is not None:
            await self.grant.admit(resuming=saved is not None)
        self.setup = setup
        config = LiveConfig.from_setup(setup)
        self.history_open = config.initial_history and saved is None  # a resumed one has it
        loaded = await self.services.models.get(config.model)  # NotFound → 1008 with its message
        config = replace(config, model=loaded.spec.id)  # an alias's turns name the real model
        if config.base.cached_content:
            if self.services.caches is None:
                raise FailedPrecondition("cachedContent is not available on this server")
            self.resolve_cache = self.services.caches(self.key_hash)
            await self.resolve_cache(config.base.cached_content)  # NotFound → 1008
        perception = self.services.perception
        await perception.vad.get()
        await perception.asr.get()
        if config.modality is ResponseModality.AUDIO:
            await perception.tts.get()
        engine = loaded.engine
        generation = config.base.generation_config
        context = engine.info.context_size
        reserve = min(
            (generation.max_output_tokens if generation else None) or ANSWER_RESERVE, context // 4
        )
        self.window = Window.from_setup(
            setup.context_window_compression, context_size=context, reserve=reserve
        )

        count = self.counter = TokenCounter(engine)
        probe = _user_text("x")
        prepared = await self.services.generation.prepare(
            config.model,
            config.base.model_copy(update={"contents": [probe]}),
            resolve_cache=self.resolve_cache,
        )
        if saved is not None:
            try:
                # A long history takes a while to count: not on the event loop.
                self.conversation = await asyncio.to_thread(
                    Conversation.from_state, saved.conversation, count
                )
            except ValueError as exc:
                log.warning("live session %s: %s", self.id, exc)
                raise FailedPrecondition("the session to resume could not be read") from None
        else:
            self.conversation.count = count
        self.conversation.base_tokens = max(len(prepared.tokens) - count(probe), 0)
        if config.resumable:
            self.handle = resume or secrets.token_urlsafe(32)
            self.store_key = _store_key(self.handle)
            self.services.holders[self.store_key] = self._end_for_takeover
            await self._save()
        log.info(
            "live session %s: model %s, %s out, %s activity detection, %s%s",
            self.id,
            config.model,
            config.modality,
            "automatic" if config.automatic_activity else "manual",
            f"window {self.window.trigger}→{self.window.target}"
            if self.window.trigger is not None
            else f"context limit {self.window.limit}",
            f", resumed with {len(self.conversation.history)} entries" if saved else "",
        )
        await self.emit(ServerMessage(setup_complete=SetupComplete(session_id=self.id)))
        if config.resumable:
            await self._announce_handle()
        return config

    # --- resumption -----------------------------------------------------------------------

    async def _resume(self, handle: str, setup: Setup) -> SavedSession:
        """The saved session a handle names, once any connection still serving it has ended."""
        key = _store_key(handle)
        end_holder = self.services.holders.get(key)
        if end_holder is not None:
            await end_holder()
        gone = FailedPrecondition("sessionResumption.handle is unknown or has expired")
        found = await self.services.store.get(key)
        if found is None:
            raise gone
        try:
            saved = SavedSession.from_bytes(found.value)
        except ValueError as exc:
            log.warning("live session %s: %s", self.id, exc)
            raise gone from None
        if not secrets.compare_digest(saved.key_hash, self.key_hash):
            raise gone  # another key's session: not even its existence is told
        if model_id(saved.setup.model) != model_id(setup.model):
            raise FailedPrecondition(
                f"the session to resume runs {saved.setup.model}, not {setup.model}"
            )
        self.state_version = found.version
        return saved

    async def _save(self) -> None:
        """Write the session's state where a resuming connection will find it.

        The write finishes even when the caller is cancelled (a barge-in, say), so the version
        this connection expects next is always the one it last wrote.
        """
        if self.store_key is None or self.setup is None:
            return
        await asyncio.shield(asyncio.ensure_future(self._write()))
        if self.save_failure is not None:
            raise self.save_failure

    async def _write(self) -> None:
        assert self.store_key is not None and self.setup is not None
        async with self.save_lock:
            if self.save_failure is not None:
                return
            saved = SavedSession(self.key_hash, self.setup, self.conversation.state())
            try:
                version = await self.services.store.put(
                    self.store_key,
                    saved.to_bytes(),
                    ttl_s=self.services.limits.resume_ttl_s,
                    expect=self.state_version,
                )
            except Exception as exc:  # the store is down: the session cannot stay resumable
                self.save_failure = exc
                self.taken_over.set()
                return
            if version is None:
                self.save_failure = FailedPrecondition(
                    "this session was resumed on another connection"
                )
                self.taken_over.set()
                return
            self.state_version = version

    def _save_soon(self) -> None:
        if self.store_key is not None and self.tg is not None:
            self.spawn(self._save())

    async def _announce_handle(self) -> None:
        update = SessionResumptionUpdate(new_handle=self.handle, resumable=True)
        await self.emit(ServerMessage(session_resumption_update=update))

    async def _end_for_takeover(self) -> None:
        self.taken_over.set()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(TAKEOVER_WAIT_S):
                await self.ended.wait()

    async def _watch_takeover(self) -> None:
        await self.taken_over.wait()
        raise self.save_failure or FailedPrecondition(
            "this session was resumed on another connection"
        )

    @property
    def _state_key(self) -> str:
        """Where the engine keeps this conversation's computed state between turns."""
        return "live:" + (self.store_key or self.id)

    # --- time limits ----------------------------------------------------------------------

    async def _deadline(self) -> None:
        """Close the connection at its time limit (or its token's expiry), with a goAway first
        so the client can resume on a new connection without losing a turn."""
        limits = self.services.limits
        ends = math.inf
        why: FlashliveError = DeadlineExceeded(
            f"the connection reached its {limits.max_connection_s:g} s limit; resume with the "
            "last sessionResumptionUpdate handle"
        )
        if limits.max_connection_s > 0:
            ends = self.opened + limits.max_connection_s
        if self.grant is not None:
            left = (self.grant.expire_time - datetime.now(UTC)).total_seconds()
            if time.monotonic() + left < ends:
                ends = time.monotonic() + left
                why = PermissionDenied("the ephemeral token of this session has expired")
        if ends == math.inf:
            return
        await asyncio.sleep(max(ends - limits.goaway_notice_s - time.monotonic(), 0))
        left = max(ends - time.monotonic(), 0.0)
        await self.emit(ServerMessage(go_away=GoAway(time_left=_duration(left))))
        await asyncio.sleep(left)
        turn = self.active
        if turn is not None and isinstance(why, DeadlineExceeded):
            # An answer being sent finishes first; one not yet started is saved, owed.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(limits.goaway_notice_s):
                    await turn.finished.wait()
        if self.store_key is not None:
            await self._save()
        raise why

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        assert self.tg is not None
        return self.tg.create_task(coro)

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

    async def _send_loop(self) -> None:
        while True:
            message = await self.outbox.get()
            await self.transport.send(message.to_json())

    # --- in -------------------------------------------------------------------------------

    async def _receive_frame(self) -> str | bytes:
        raw = await self.transport.receive()
        if raw is None:
            raise ClientGone
        limit = self.services.limits.max_frame_bytes
        if len(raw) > limit:
            raise PayloadTooLarge(f"a frame of {len(raw)} bytes exceeds the {limit}-byte limit")
        return raw

    async def _receive_loop(self) -> None:
        while True:
            message = await _parsed(await self._receive_frame())
            if message.setup is not None:
                raise FailedPrecondition("setup may be sent only once, as the first message")
            if (refusal := first_refusal(message)) is not None:
                raise InvalidArgument(refusal)
            if message.client_content is not None:
                await self.counter.prime(message.client_content.turns or [])
                await self._client_content(message.client_content)
            elif message.realtime_input is not None:
                await self._realtime_input(message.realtime_input)
            elif message.tool_response is not None:
                responses = message.tool_response.function_responses
                answer = self.conversation.answer_calls(responses)
                await self.counter.prime([answer])
                await self._user_turn(UserTurn(answer, answers_tools=True))

    async def _client_content(self, content: ClientContent) -> None:
        self.conversation.add_client_turns(content.turns or [])
        if self.history_open:
            if content.turn_complete:  # the initial history is all here: nothing to answer
                self.history_open = False
                self.conversation.commit_history(self.window)
            self._save_soon()
            return
        if not content.turn_complete and content.turns:
            self._save_soon()  # context given ahead of its turn is part of the session
        if content.turn_complete:
            if not self.conversation.pending:
                raise InvalidArgument("clientContent.turnComplete with no turns to answer")
            self._barge_in()
            await self._user_turn(UserTurn(None))

    async def _realtime_input(self, given: RealtimeInput) -> None:
        config = self.conf
        if self.history_open:
            raise FailedPrecondition(
                "historyConfig.initialHistoryInClientContent: send the history as clientContent, "
                "ending with turnComplete, before any realtimeInput"
            )
        if given.text is not None and given.text.strip():
            said = _user_text(given.text)
            await self.counter.prime([said])
            self._barge_in()
            await self._user_turn(UserTurn(said, transcript=None))
        if given.audio is not None:
            await self._audio_in(given.audio, "realtimeInput.audio")
        for i, blob in enumerate(given.media_chunks or []):
            where = f"realtimeInput.mediaChunks[{i}]"
            if blob.mime_type.lower().startswith("image/"):
                self._frame_in(blob, where)
            else:
                await self._audio_in(blob, where)
        if given.video is not None:
            self._frame_in(given.video, "realtimeInput.video")
        if given.audio_stream_end:
            await self.audio.put(FLUSH)
        for signal, mark, name in (
            (given.activity_start, ACTIVITY_START, "activityStart"),
            (given.activity_end, ACTIVITY_END, "activityEnd"),
        ):
            if signal is None:
                continue
            if config.automatic_activity:
                raise FailedPrecondition(
                    f"{name} needs realtimeInputConfig.automaticActivityDetection.disabled"
                )
            await self.audio.put(mark)

    def _frame_in(self, blob: Blob, where: str) -> None:
        """Keep the newest camera frame; one still waiting to be looked at is stale: dropped."""
        if self.services.vision is None:
            raise InvalidArgument(f"{where}: this server has no vision stage")
        if self.conf.views_in_activity_only and not self._user_active():
            return  # turnCoverage: only what comes while the user speaks joins their turn
        mime = mime_base(blob.mime_type)
        if mime not in IMAGE_MIMES:
            raise InvalidArgument(
                f"{where}: {blob.mime_type} is not an image type this server reads"
            )
        frame = Frame(blob_bytes(blob.data, f"{where}.data"), mime, self.samples_in / INPUT_RATE)
        if self.frames.full():
            self.frames.get_nowait()
            self.frames_dropped += 1
        self.frames.put_nowait(frame)

    async def _look_loop(self) -> None:
        """Look at the newest frame whenever the last look is done; an unchanged scene is not
        looked at again. What is seen joins the next user turn."""
        vision = self.services.vision
        if vision is None:
            return
        watch = SceneWatch()
        while True:
            frame = await self.frames.get()
            try:
                image = await asyncio.to_thread(decode_image, frame.data, frame.mime)
            except InvalidArgument as exc:
                raise InvalidArgument(f"a video frame: {exc.message}") from None
            if not await asyncio.to_thread(watch.is_new, image):
                continue
            looked_at = fit(image, self.conf.views.max_side)
            seen = await asyncio.to_thread(vision.observe_image, looked_at)  # decoded once
            self.frames_seen += 1
            self.conversation.see(seen.text)
            log.debug(
                "live session %s: at %.1f s the camera shows %s", self.id, frame.at, seen.text
            )

    async def _audio_in(self, blob: Blob, where: str) -> None:
        try:
            rate = parse_pcm_mime(blob.mime_type)
        except InvalidArgument as exc:
            raise InvalidArgument(f"{where}: {exc.message}") from None
        pcm = blob_bytes(blob.data, f"{where}.data")
        samples = pcm16_to_float(pcm)
        if rate != self.resampler_rate:
            self.resampler_rate = rate
            self.resampler = Resampler(rate, INPUT_RATE) if rate != INPUT_RATE else None
        if self.resampler is not None:
            samples = self.resampler.feed(samples)
        if samples.size:
            await self.audio.put(AudioIn(samples))

    async def _user_turn(self, turn: UserTurn) -> None:
        if self.services.quota is not None:
            # Over quota ends the session (1013, with the wait in the reason): a socket has no
            # per-message error, and answering anyway would overspend.
            self.services.quota(self.key_hash)
        try:
            self.turns.put_nowait(turn)
        except asyncio.QueueFull:
            raise FailedPrecondition(
                f"{self.turns.maxsize} turns are already waiting for an answer"
            ) from None

    @property
    def conf(self) -> LiveConfig:
        assert self.config is not None
        return self.config

    # --- listening ------------------------------------------------------------------------

    async def _listen_loop(self) -> None:
        config = self.conf
        vad = self.vad = VadStream(await self.services.perception.vad.get(), config.vad)
        while True:
            item = await self.audio.get()
            if isinstance(item, AudioIn):
                self.samples_in += item.samples.size
                if config.automatic_activity:
                    for event in await asyncio.to_thread(vad.feed, item.samples):
                        self._on_vad(event)
                    self._maybe_warm(vad)
                elif self.in_activity is not None:
                    self.in_activity.append(item.samples)
                    if sum(a.size for a in self.in_activity) >= MAX_UTTERANCE_S * INPUT_RATE:
                        self._end_activity()
            elif item is FLUSH:
                if config.automatic_activity:
                    for event in vad.flush():
                        self._on_vad(event)
                elif self.in_activity is not None:
                    self._end_activity()
            elif item is ACTIVITY_START:
                self._barge_in()
                self.in_activity = []
            elif item is ACTIVITY_END and self.in_activity is not None:
                self._end_activity()

    def _user_active(self) -> bool:
        """Whether the user is speaking now: by the VAD, or between their activity signals."""
        if self.conf.automatic_activity:
            return self.vad is not None and self.vad.in_speech
        return self.in_activity is not None

    def _end_activity(self) -> None:
        audio = np.concatenate(self.in_activity) if self.in_activity else np.zeros(0, np.float32)
        self.in_activity = None
        if audio.size:
            self.spawn(self._finish_utterance(audio, None))

    def _maybe_warm(self, vad: VadStream) -> None:
        """Prefill the words heard so far while the user is still speaking: when they stop,
        only the last few words are new to the model."""
        if not vad.in_speech or self.active is not None or self.speculation is not None:
            return
        transcriber = self.services.perception.asr.value
        if transcriber is None or not transcriber.idle:
            return  # other sessions' final words come first
        if self.warming is not None and not self.warming.done():
            return
        audio = vad.utterance()
        if audio is None or audio.size < self.warmed_samples + WARM_EVERY_S * INPUT_RATE:
            return
        self.warmed_samples = audio.size
        self.warming = self.spawn(self._warm(audio))

    async def _warm(self, audio: np.ndarray) -> None:
        text = await self._transcribe(audio)
        if text and self.active is None:
            began = time.monotonic()
            done = await self._warm_engine(_user_text(text))
            log.debug(
                "live session %s: warmed %r: %s in %.3f s",
                self.id,
                text,
                "done" if done else "skipped",
                time.monotonic() - began,
            )

    async def _warm_engine(self, user: Content | None) -> bool:
        """Compute the context (and `user`'s words) ahead of the turn, if the engine is idle."""
        return await self.services.generation.warm(
            self.conf.model,
            self.conversation.request(self.conf.base, user),
            resolve_cache=self.resolve_cache,
            state_key=self._state_key,
        )

    def _stop_warming(self) -> None:
        if self.warming is not None:
            self.warming.cancel()
            self.warming = None

    def _on_vad(self, event: VadEvent) -> None:
        if isinstance(event, SpeechStarted):
            self.warmed_samples = 0
            self._drop_speculation()
            self._barge_in()
        elif isinstance(event, SpeechPaused):
            self._stop_warming()
            if self.active is None and self.turns.empty():
                task = self.spawn(self._speculate(event.audio))
                self.speculation = Speculation(event.sample, task)
        elif isinstance(event, SpeechResumed):
            self._drop_speculation()
        elif isinstance(event, SpeechEnded):
            self._stop_warming()
            speculation = self.speculation
            self.speculation = None
            if speculation is not None and speculation.sample != event.sample:
                speculation.cancel()
                speculation = None
            self.spawn(self._finish_utterance(event.audio, speculation))

    def _drop_speculation(self) -> None:
        if self.speculation is not None:
            self.speculation.cancel()
            self.speculation = None

    async def _transcribe(self, audio: np.ndarray) -> str:
        transcriber = await self.services.perception.asr.get()
        result = await transcriber.transcribe(self.id, audio)
        self.last_asr_compute_s = result.compute_seconds
        return result.text.strip()

    async def _speculate(self, audio: np.ndarray) -> ModelTurn | None:
        """Transcribe and start answering during the silence that may end the utterance."""
        began = time.monotonic()
        text = await self._transcribe(audio)
        if not text:
            return None
        turn = ModelTurn.start(self, _user_text(text), text)
        turn.asr_s = turn.started - began
        turn.asr_compute_s = self.last_asr_compute_s
        turn.draft = True
        return turn

    async def _finish_utterance(self, audio: np.ndarray, speculation: Speculation | None) -> None:
        # Utterances end in order: a short one must not overtake the long one before it.
        async with self.finish_lock:
            draft = await speculation.result() if speculation is not None else None
            if draft is not None:
                await self._user_turn(UserTurn(draft.user, draft.transcript, draft=draft))
                return
            began = time.monotonic()
            text = await self._transcribe(audio)
            if text:
                turn = UserTurn(_user_text(text), transcript=text)
                turn.asr_s = time.monotonic() - began
                await self._user_turn(turn)

    # --- answering ------------------------------------------------------------------------

    async def _turn_loop(self) -> None:
        while True:
            pending = await self.turns.get()
            turn = pending.draft
            if turn is not None and turn.version != self.conversation.version:
                turn.cancel()  # history moved on while it was drafted
                turn = None
            dropped = self.conversation.commit_user(pending.user, self.window)
            if dropped:
                self._log_slide(dropped)
                if turn is not None:  # drafted on the longer context: answer on the one kept
                    turn.cancel()
                    turn = None
            if turn is None:
                turn = ModelTurn.start(
                    self,
                    pending.user,
                    pending.transcript,
                    answers_tools=pending.answers_tools,
                    committed=True,
                )
                turn.asr_s = pending.asr_s
            self.active = turn
            await self._save()  # the user's turn is safe before any of its answer is sent
            turn.commit()
            await turn.finished.wait()
            if not turn.interrupted:
                await turn.playback_ends()
            if self.active is turn:
                self.active = None

    def _log_slide(self, dropped: int) -> None:
        log.info(
            "live session %s: the sliding window dropped %d turns; %d tokens remain",
            self.id,
            dropped,
            self.conversation.tokens,
        )

    def _after_answer(self) -> None:
        """Between turns: slide the window now if it is due, and compute the shorter context
        while the engine is otherwise idle, so the next turn does not wait for it."""
        if self.window is None:
            return
        dropped = self.conversation.keep_within(self.window)
        if dropped:
            self._log_slide(dropped)
            self.spawn(self._prefill_context(self.conversation.version))

    async def _prefill_context(self, version: int) -> None:
        while self.conversation.version == version:
            if await self._warm_engine(None):
                log.info("live session %s: the shortened context is computed", self.id)
                return
            await asyncio.sleep(PREFILL_RETRY_S)  # the engine is busy: try again when it may not be

    def _barge_in(self) -> None:
        """The user started a new turn: stop the model's answer, keep what was heard of it."""
        if not self.conf.interrupts:
            return
        turn = self.active
        if turn is not None and not turn.interrupted:
            self.active = None
            turn.interrupted = True
            heard = turn.heard()
            turn.cancel()
            turn.record_usage()
            if turn.sent_all:  # recorded whole, but the user cut in while it was playing
                self.conversation.replace_last_model(heard)
            else:
                self.conversation.record_model(heard, [])
            log.info("live session %s: interrupted; kept %d chars heard", self.id, len(heard))
            self._emit_soon(ServerMessage(server_content=ServerContent(interrupted=True)))
            self._save_soon()
        ids = self.conversation.cancel_calls()
        if ids:
            self._emit_soon(ServerMessage(tool_call_cancellation=ToolCallCancellation(ids=ids)))
            self._save_soon()

    def _emit_soon(self, message: ServerMessage) -> None:
        """Queue a message now, ahead of anything a later turn sends."""
        try:
            self.outbox.put_nowait(message)
        except asyncio.QueueFull:
            self.spawn(self.emit(message))


class TokenCounter:
    """What a history entry costs in context, as the conversation asks (synchronously).

    Tokenizing a long text takes a while (seconds for a 4 MB frame) and would stall the event
    loop for every session, so long pieces are counted ahead, in a thread (`prime`), and
    remembered by their hash; an entry holding one costs the sum of its pieces.
    """

    def __init__(self, engine: Any) -> None:
        self._engine = engine
        self._long: OrderedDict[tuple[int, int], int] = OrderedDict()

    def __call__(self, content: Content) -> int:
        pieces = content_pieces(content)
        if all(len(p) < LONG_TEXT_CHARS for p in pieces):
            return int(self._engine.count_tokens("\n".join(pieces))) + MESSAGE_OVERHEAD
        return sum(self._piece(p) for p in pieces) + len(pieces) - 1 + MESSAGE_OVERHEAD

    def _piece(self, text: str) -> int:
        key = (len(text), hash(text))
        if key in self._long:
            return self._long[key]
        return int(self._engine.count_tokens(text))

    async def prime(self, contents: list[Content]) -> None:
        if self._engine is None:
            return
        for content in contents:
            for piece in content_pieces(content):
                key = (len(piece), hash(piece))
                if len(piece) >= LONG_TEXT_CHARS and key not in self._long:
                    self._long[key] = await asyncio.to_thread(self._engine.count_tokens, piece)
                    while len(self._long) > LONG_TEXTS_KEPT:
                        self._long.popitem(last=False)


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
class ModelTurn:
    """One answer: generated (and spoken) into its own queue, sent once committed."""

    session: LiveSession
    user: Content | None
    transcript: str | None
    version: int
    queue: asyncio.Queue[ServerMessage | Spoken | None] = field(default_factory=asyncio.Queue)
    committed: asyncio.Event = field(default_factory=asyncio.Event)
    finished: asyncio.Event = field(default_factory=asyncio.Event)
    text: str = ""
    sent_text: str = ""
    calls: list[FunctionCall] = field(default_factory=list)
    spoken: SpokenLog = field(default_factory=SpokenLog)
    first_audio_at: float | None = None
    interrupted: bool = False
    sent_all: bool = False
    draft: bool = False  # started speculatively, before the user's turn was known to be over
    started: float = field(default_factory=time.monotonic)
    asr_s: float | None = None
    asr_compute_s: float | None = None
    first_text_at: float | None = None
    first_audio_at_made: float | None = None
    committed_at: float | None = None
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    usage: UsageMetadata | None = None  # arrives with the last chunk
    chunks: int = 0  # streamed pieces: the output count of a turn cut off before its usage
    recorded: bool = False
    views: tuple[int, int] = (0, 0)  # camera views in the prompt, and the tokens of their text

    @classmethod
    def start(
        cls,
        session: LiveSession,
        user: Content | None,
        transcript: str | None,
        *,
        answers_tools: bool = False,
        committed: bool = False,
    ) -> ModelTurn:
        """Start answering `user`: a draft ahead of its commit, or (`committed`) a user turn
        the history already holds."""
        turn = cls(session, user, transcript, session.conversation.version)
        asked = None if committed else user
        request = session.conversation.request(session.conf.base, asked)
        turn.views = session.conversation.views(asked)
        if answers_tools:
            # Small models tend to call the same function again rather than use its result:
            # the answer to a tool response is text.
            request.tool_config = ToolConfig(
                function_calling_config=FunctionCallingConfig(mode=FunctionCallingMode.NONE)
            )
        turn.tasks = [
            session.spawn(turn._produce(request)),
            session.spawn(turn._forward()),
        ]
        return turn

    def commit(self) -> None:
        self.committed_at = time.monotonic()
        self.committed.set()

    def log_timing(self) -> None:
        """Where this turn's time went, relative to when generation started."""

        def at(moment: float | None) -> str:
            return "-" if moment is None else f"{moment - self.started:+.3f}"

        log.info(
            "live session %s turn timing: draft=%s asr=%s first_text=%s first_audio=%s "
            "committed=%s done=%s asr_compute=%s",
            self.session.id,
            "yes" if self.draft else "no",
            "-" if self.asr_s is None else f"{self.asr_s:.3f}",
            at(self.first_text_at),
            at(self.first_audio_at_made),
            at(self.committed_at),
            at(time.monotonic()),
            "-" if self.asr_compute_s is None else f"{self.asr_compute_s:.3f}",
        )

    def record_usage(self) -> None:
        """One ledger record for a turn the user was given, whole or cut off; never twice."""
        ledger = self.session.services.ledger
        if ledger is None or self.recorded:
            return
        self.recorded = True
        self.session.spawn(_write_usage(ledger, self._usage_record()))

    def _usage_record(self) -> UsageRecord:
        config = self.session.conf
        out = "AUDIO" if config.modality is ResponseModality.AUDIO else "TEXT"
        usage = self.usage
        output = (usage.candidates_token_count or 0) if usage else self.chunks
        billed = self.live_usage().prompt_tokens_details or []
        return UsageRecord(
            request_id=uuid.uuid4().hex,
            time=utc_now(),
            key_hash=self.session.key_hash,
            model=config.model,
            method="live.turn",
            input_tokens={str(d.modality): d.token_count for d in billed if d.token_count},
            output_tokens={out: output} if output else {},
            latency_s=time.monotonic() - self.started,
            status=499 if self.interrupted else 200,
        )

    def live_usage(self) -> LiveUsageMetadata:
        conf = self.session.conf
        image_tokens = conf.views.image_tokens(self.session.services.generation.media_tokens.image)
        return _live_usage(self.usage, conf.modality, self.views, image_tokens)

    def cancel(self) -> None:
        for task in self.tasks:
            task.cancel()
        self.finished.set()

    def heard(self) -> str:
        if self.first_audio_at is None:
            return self.sent_text
        return self.spoken.heard(time.monotonic() - self.first_audio_at)

    async def playback_ends(self) -> None:
        """Wait while the client is still playing this turn's audio: the user may cut in."""
        if self.first_audio_at is None:
            return
        left = self.first_audio_at + self.spoken.seconds - time.monotonic()
        if left > 0:
            self.finished.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(left):
                    await self.finished.wait()
            self.finished.set()

    def put(self, message: ServerMessage | Spoken | None) -> None:
        self.queue.put_nowait(message)  # bounded by maxOutputTokens of this one answer

    async def _produce(self, request: GenerateContentRequest) -> None:
        session = self.session
        config = session.conf
        if self.transcript is not None and config.input_transcription:
            self.put(
                _content(input_transcription=Transcription(text=self.transcript, finished=True))
            )
        speaking = config.modality is ResponseModality.AUDIO
        voice = Voice(self) if speaking else None
        try:
            stream = session.services.generation.stream(
                config.model,
                request,
                resolve_cache=session.resolve_cache,
                state_key=session._state_key,
            )
            async for chunk in stream:
                self.chunks += 1
                for part in chunk.candidates[0].content.parts:
                    if part.text:
                        if self.first_text_at is None:
                            self.first_text_at = time.monotonic()
                        self.text += part.text
                        if voice is not None:
                            voice.feed(part.text)
                        else:
                            self.put(_content(model_turn=_model_parts(Part(text=part.text))))
                    elif part.function_call is not None:
                        self.calls.append(part.function_call)
                self.usage = chunk.usage_metadata or self.usage
        except InvalidArgument as exc:
            # The request was valid when each message arrived; what fails now is the session
            # as a whole (its context is full, say): a policy close, not a bad frame.
            raise FailedPrecondition(exc.message) from None
        if voice is not None:
            await voice.finish()
        if self.calls:
            self.put(ServerMessage(tool_call=ToolCall(function_calls=self.calls)))
        else:
            self.put(_content(generation_complete=True))
        live_usage = self.live_usage()
        if self.calls:
            self.put(ServerMessage(usage_metadata=live_usage))
        else:
            self.put(
                ServerMessage(
                    server_content=ServerContent(turn_complete=True), usage_metadata=live_usage
                )
            )
        self.put(None)

    async def _forward(self) -> None:
        await self.committed.wait()
        while (item := await self.queue.get()) is not None:
            if isinstance(item, Spoken):
                self.spoken.add(item.text, item.seconds)
                continue
            if item.tool_call is not None:  # answerable from the moment the client sees it
                self.session.conversation.expect_calls(item.tool_call.function_calls)
            content = item.server_content
            if content is not None and content.model_turn is not None:
                for part in content.model_turn.parts:
                    if part.text:
                        self.sent_text += part.text
                    elif part.inline_data is not None and self.first_audio_at is None:
                        self.first_audio_at = time.monotonic()
            await self.session.emit(item)
        session = self.session
        session.conversation.record_model(self.text, self.calls)
        session._after_answer()
        self.sent_all = True
        self.log_timing()
        self.record_usage()
        if session.store_key is not None:
            await session._save()
            await session._announce_handle()
        self.finished.set()


class Voice:
    """Speech for one turn: clauses are synthesised in order while the text keeps coming."""

    def __init__(self, turn: ModelTurn) -> None:
        self.turn = turn
        self.splitter = ClauseSplitter(first_max_words=FIRST_PIECE_WORDS)
        self.clauses: asyncio.Queue[str | None] = asyncio.Queue()
        self.task = turn.session.spawn(self._speak())
        turn.tasks.append(self.task)

    def feed(self, text: str) -> None:
        for clause in self.splitter.feed(text):
            self.clauses.put_nowait(clause)

    async def finish(self) -> None:
        for clause in self.splitter.flush():
            self.clauses.put_nowait(clause)
        self.clauses.put_nowait(None)
        await self.task

    async def _speak(self) -> None:
        session = self.turn.session
        synthesizer = await session.services.perception.tts.get()
        transcribe_out = session.conf.output_transcription
        said = False
        while (clause := await self.clauses.get()) is not None:
            words = speakable(clause)
            if not words:
                continue
            pcm = await synthesizer.synthesize(session.id, words)
            if self.turn.first_audio_at_made is None:
                self.turn.first_audio_at_made = time.monotonic()
            step = int(AUDIO_CHUNK_S * OUTPUT_RATE) * 2
            for start in range(0, len(pcm), step):
                blob = Blob(
                    mime_type=f"audio/pcm;rate={OUTPUT_RATE}",
                    data=base64.b64encode(pcm[start : start + step]).decode("ascii"),
                )
                self.turn.put(_content(model_turn=_model_parts(Part(inline_data=blob))))
            self.turn.put(Spoken(clause, len(pcm) / 2 / OUTPUT_RATE))
            if transcribe_out:
                # The words as spoken, each piece after the first with the space before it (as
                # Gemini's pieces carry it): a client joins the pieces as they come.
                text = (" " if said else "") + words
                self.turn.put(_content(output_transcription=Transcription(text=text)))
            said = True


async def _write_usage(ledger: UsageSink, record: UsageRecord) -> None:
    # A ledger that fails must not take the conversation down with it.
    try:
        await ledger.record(record)
    except Exception:
        log.exception("live turn usage could not be recorded")


async def _parsed(raw: str | bytes) -> ClientMessage:
    if len(raw) <= INLINE_PARSE_BYTES:
        return parse_client_message(raw)
    # A frame of megabytes takes a while to parse and check: other sessions go on meanwhile.
    return await asyncio.to_thread(parse_client_message, raw)


def _store_key(handle: str) -> str:
    """Handles are bearer secrets: the store keeps only their digest."""
    return "session:" + hashlib.sha256(handle.encode()).hexdigest()


def _duration(seconds: float) -> str:
    """A protobuf Duration in its JSON form, e.g. "9.5s"."""
    return f"{round(seconds, 3):g}s"


def _user_text(text: str) -> Content:
    return Content(role=Role.USER, parts=[Part(text=text)])


def _model_parts(*parts: Part) -> Content:
    return Content(role=Role.MODEL, parts=list(parts))


def _content(**fields: Any) -> ServerMessage:
    return ServerMessage(server_content=ServerContent(**fields))


def _live_usage(
    usage: UsageMetadata | None,
    modality: ResponseModality,
    views: tuple[int, int],
    image_tokens: int,
) -> LiveUsageMetadata:
    """A turn's usage; the camera views in its prompt count as images, not as their text."""
    engine_prompt = usage.prompt_token_count if usage else 0
    response = (usage.candidates_token_count or 0) if usage else 0
    out = Modality.AUDIO if modality is ResponseModality.AUDIO else Modality.TEXT
    seen, seen_text = views
    text = max(engine_prompt - seen_text, 0)
    details = [ModalityTokenCount(modality=Modality.TEXT, token_count=text)]
    if seen and usage is not None:
        details.append(ModalityTokenCount(modality=Modality.IMAGE, token_count=seen * image_tokens))
    prompt = sum(d.token_count for d in details)
    return LiveUsageMetadata(
        prompt_token_count=prompt,
        cached_content_token_count=usage.cached_content_token_count if usage else None,
        response_token_count=response,
        total_token_count=prompt + response,
        prompt_tokens_details=details,
        response_tokens_details=[ModalityTokenCount(modality=out, token_count=response)],
    )
