"""One model turn and its voice: generated (and spoken) into the turn's own queue, sent once
committed. A turn sees the session through a `TurnContext`, never the session itself.

The per-turn usage (`UsageRecord` for the ledger, `LiveUsageMetadata` for the client) is shaped
by `flashlive.usage`, the rule REST uses too.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from flashlive.errors import FailedPrecondition, InvalidArgument
from flashlive.generation.service import CacheResolver, GenerationService
from flashlive.ledger.records import UsageRecord, UsageSink, utc_now
from flashlive.live.frames import Spoken
from flashlive.live.services import Lazy
from flashlive.live.session import Conversation, LiveConfig, SpokenLog
from flashlive.perception.audio import OUTPUT_RATE
from flashlive.perception.speech_text import ClauseSplitter, speakable
from flashlive.perception.tts import Synthesizer
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
from flashlive.protocol.generate import (
    GenerateContentRequest,
    UsageMetadata,
)
from flashlive.protocol.live import (
    LiveUsageMetadata,
    ResponseModality,
    ServerContent,
    ServerMessage,
    ToolCall,
    Transcription,
)
from flashlive.usage import live_usage, tokens_by_modality

log = logging.getLogger(__name__)

AUDIO_CHUNK_S = 0.5  # spoken answers leave in pieces this long, so playback starts early
FIRST_PIECE_WORDS = 3  # speech starts after this many words, even mid-sentence


@dataclass
class TurnContext:
    """What a model turn may use of its session."""

    session_id: str
    config: LiveConfig
    conversation: Conversation
    generation: GenerationService
    resolve_cache: CacheResolver | None
    state_key: str  # where the engine keeps this conversation's computed state
    key_hash: str  # whom the ledger bills
    ledger: UsageSink | None
    tts: Lazy[Synthesizer]
    image_tokens: int  # what one camera view is billed as
    spawn: Callable[[Coroutine[Any, Any, Any]], asyncio.Task[Any]]
    emit: Callable[[ServerMessage], Awaitable[None]]
    # The session's bookkeeping once the whole answer has been handed to the outbox.
    answered: Callable[[ModelTurn], Awaitable[None]]


@dataclass
class ModelTurn:
    """One answer: generated (and spoken) into its own queue, sent once committed."""

    ctx: TurnContext
    user: Content | None
    transcript: str | None
    version: int
    # Unbounded by design: a draft must generate ahead while it is not yet committed (a bound
    # would stall it), and what it holds is one answer of at most maxOutputTokens, audio included.
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
        ctx: TurnContext,
        user: Content | None,
        transcript: str | None,
        *,
        answers_tools: bool = False,
        committed: bool = False,
    ) -> ModelTurn:
        """Start answering `user`: a draft ahead of its commit, or (`committed`) a user turn
        the history already holds."""
        conversation = ctx.conversation
        turn = cls(ctx, user, transcript, conversation.version)
        asked = None if committed else user
        request = conversation.request(ctx.config.base, asked)
        turn.views = conversation.views(asked)
        if answers_tools:
            # Small models tend to call the same function again rather than use its result:
            # the answer to a tool response is text.
            request.tool_config = ToolConfig(
                function_calling_config=FunctionCallingConfig(mode=FunctionCallingMode.NONE)
            )
        turn.tasks = [
            ctx.spawn(turn._produce(request)),
            ctx.spawn(turn._forward()),
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
            self.ctx.session_id,
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
        ledger = self.ctx.ledger
        if ledger is None or self.recorded:
            return
        self.recorded = True
        self.ctx.spawn(_write_usage(ledger, self._usage_record()))  # once per turn

    def _usage_record(self) -> UsageRecord:
        config = self.ctx.config
        out = "AUDIO" if config.modality is ResponseModality.AUDIO else "TEXT"
        usage = self.usage
        output = (usage.candidates_token_count or 0) if usage else self.chunks
        billed = self.live_usage().prompt_tokens_details or []
        return UsageRecord(
            request_id=uuid.uuid4().hex,
            time=utc_now(),
            key_hash=self.ctx.key_hash,
            model=config.model,
            method="live.turn",
            input_tokens=tokens_by_modality(billed, 0),
            output_tokens={out: output} if output else {},
            latency_s=time.monotonic() - self.started,
            status=499 if self.interrupted else 200,
        )

    def live_usage(self) -> LiveUsageMetadata:
        modality = self.ctx.config.modality
        return live_usage(self.usage, modality, self.views, self.ctx.image_tokens)

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
        self.queue.put_nowait(message)  # see `queue`: one answer at most

    async def _produce(self, request: GenerateContentRequest) -> None:
        ctx = self.ctx
        config = ctx.config
        if self.transcript is not None and config.input_transcription:
            self.put(
                _content(input_transcription=Transcription(text=self.transcript, finished=True))
            )
        speaking = config.modality is ResponseModality.AUDIO
        voice = Voice(self) if speaking else None
        try:
            stream = ctx.generation.stream(
                config.model, request, resolve_cache=ctx.resolve_cache, state_key=ctx.state_key
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
                self.ctx.conversation.expect_calls(item.tool_call.function_calls)
            content = item.server_content
            if content is not None and content.model_turn is not None:
                for part in content.model_turn.parts:
                    if part.text:
                        self.sent_text += part.text
                    elif part.inline_data is not None and self.first_audio_at is None:
                        self.first_audio_at = time.monotonic()
            await self.ctx.emit(item)
        self.sent_all = True
        self.log_timing()
        self.record_usage()
        await self.ctx.answered(self)
        self.finished.set()


class Voice:
    """Speech for one turn: clauses are synthesised in order while the text keeps coming."""

    def __init__(self, turn: ModelTurn) -> None:
        self.turn = turn
        self.splitter = ClauseSplitter(first_max_words=FIRST_PIECE_WORDS)
        # Unbounded like the turn's queue, and for the same reason: the clauses of one answer.
        self.clauses: asyncio.Queue[str | None] = asyncio.Queue()
        self.task = turn.ctx.spawn(self._speak())
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
        ctx = self.turn.ctx
        synthesizer = await ctx.tts.get()
        transcribe_out = ctx.config.output_transcription
        said = False
        while (clause := await self.clauses.get()) is not None:
            words = speakable(clause)
            if not words:
                continue
            pcm = await synthesizer.synthesize(ctx.session_id, words)
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


def _model_parts(*parts: Part) -> Content:
    return Content(role=Role.MODEL, parts=list(parts))


def _content(**fields: Any) -> ServerMessage:
    return ServerMessage(server_content=ServerContent(**fields))
