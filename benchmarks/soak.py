"""Soak benchmark: one Live session fed an accelerated hour of audio and periodic spoken questions.

It starts its own flashlive server (as `benchmarks.live` does, sharing its Piper speech cache)
and keeps one TEXT-out Live session going for `--minutes` of simulated time, with
inputAudioTranscription, contextWindowCompression (`--trigger-tokens` → `--target-tokens`) and
sessionResumption on. What it watches is whether a long session stays healthy: the server's
resident memory must level off and the answers must not get slower as the hours go by.

The audio is one continuous stream of 40 ms chunks; the samples sent so far are the session's
simulated clock. Between questions the stream is quiet background (white noise at -60 dBFS,
not digital zero) sent `--speedup` times faster than real time. Every `--question-every-s`
simulated seconds the stream slows to real time: first 1 s of background, so the server has
worked off any backlog of the fast part, then a spoken question (from a list of varied short
ones, with the background mixed in), then background at real pace until that turn's
turnComplete (answers are never barged in on). Real time spent speaking and answering is
simulated time too, so the fast part covers the rest of each interval.

Per turn, from the last voiced sample of the question (as in `benchmarks.live`): input
transcription, first model text, turnComplete; and the turn's promptTokenCount and
cachedContentTokenCount (prompt tokens whose engine state was reused). A promptTokenCount lower
than the turn before is a cut of the sliding window.

The server closes each connection after `--max-connection-s` of wall time, with a goAway 10 s
before. The default hour takes about 6 minutes of wall time on 2 cores, less than the server's
own limit (600 s), so the benchmark sets 120 s and the session reconnects a few times per run
(`--max-connection-s 600` for the server's default, 0 for none). On goAway the client
reconnects with its last sessionResumptionUpdate handle as soon as no turn is in flight (after
a turn, once the update that follows its turnComplete has come); a close with code 1000 also
reconnects, and a turn whose answer was cut off is answered on the new connection (it counts
as resumed and is left out of the latency medians). Any other close ends the run as a session
failure.

The server's RSS (/proc/<pid>/status VmRSS, and RssAnon) is printed every 5 simulated minutes as
the run goes. The verdict compares, within this one run, RSS at the end of `--warmup-minutes`
with RSS at the end (goal: at most 5% growth) and the median first-text latency of the first 5
turns after warm-up with that of the last 5 (goal: last/first at most 1.2).

    .venv/bin/python -m benchmarks.soak [--minutes 60] [--speedup 30] [--question-every-s 60]
        [--warmup-minutes 10] [--trigger-tokens 800] [--target-tokens 400]
        [--max-connection-s 120] [--model ID] [--context-size N] [--server-log PATH]

A short run that reconnects several times and slides the window: `--minutes 12
--warmup-minutes 4 --max-connection-s 30 --trigger-tokens 300 --target-tokens 150`.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import math
import os
import signal
import statistics
import tempfile
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from typing import Any

import numpy as np
from websockets.exceptions import ConnectionClosed, InvalidHandshake

from benchmarks.live import (
    CHUNK,
    QUESTIONS,
    RATE,
    SETUP_TIMEOUT_S,
    TURN_TIMEOUT_S,
    WARM_UP,
    Bench,
    Live,
    Turn,
    Utterance,
    audio_message,
    breakdown,
    fmt_s,
    server_notes,
    server_process,
    speech_cache,
    synthesise,
    table,
)
from benchmarks.server import BenchServer, memory
from flashlive.models import BUILTIN_MODELS, DEFAULT_MODEL

NOISE_DBFS = -60.0  # RMS of the background
NOISE_S = 10  # the background is this much noise, made once and cycled
SETTLE_S = 1.0  # real-time background before each question
MAX_TOKENS = 80  # per answer: enough for the instruction below, short enough for the wall time
# With it a turn (question and answer) adds some 25-35 tokens to the context: an hour of
# questions makes the default window, 800 → 400 tokens, slide three times (1500 → 750: once).
INSTRUCTION = "You are a friendly voice assistant. Answer every question in two or three sentences."
MARK_EVERY_S = 300  # simulated seconds between memory readings
SIDE = 5  # turns in each of the first/last latency samples
POLL_S = 0.05  # the longest the reader sleeps before looking at the clock again
GOAL_RSS_GROWTH = 0.05
GOAL_LATENCY_RATIO = 1.2
MIB = 1 << 20

SOAK_QUESTIONS = (
    *QUESTIONS,
    "What is the largest planet in our solar system?",
    "How many days are in a week?",
    "What color is fresh grass?",
    "Name an animal that can fly.",
    "What is the opposite of hot?",
    "How many minutes are in an hour?",
    "What do bees make?",
    "Which ocean is the largest?",
    "What is ten minus three?",
    "What language is spoken in Spain?",
    "What do you call frozen water?",
    "How many sides does a triangle have?",
)


class SessionFailed(Exception):
    """The session cannot go on: a close other than 1000, or a resume that was refused."""


# --- audio ----------------------------------------------------------------------------------


def background(seconds: float, seed: int = 0) -> np.ndarray:
    """Low-level white noise, PCM16 samples."""
    level = 32768 * 10 ** (NOISE_DBFS / 20)
    noise = np.random.default_rng(seed).normal(0.0, level, int(seconds * RATE))
    return np.clip(np.round(noise), -32768, 32767).astype("<i2")


def over(pcm: bytes, floor: np.ndarray) -> bytes:
    """`pcm` with the background mixed in."""
    speech = np.frombuffer(pcm, dtype="<i2").astype(np.int32)
    noise = np.resize(floor, speech.size).astype(np.int32)
    mixed: bytes = np.clip(speech + noise, -32768, 32767).astype("<i2").tobytes()
    return mixed


@dataclass(frozen=True)
class Frame:
    message: str  # a ready-made realtimeInput.audio message
    samples: int
    on_mark: Callable[[float], None] | None = None  # called with the instant of sample `offset`
    offset: int = 0


CAMERA_WORDS = ("EXIT", "GATE 7", "RIVER", "LEMON", "CASTLE", "HOTEL")
CAMERA_SCENE_S = 30.0  # the camera's sign changes this often (simulated seconds)


def camera_messages() -> list[str]:
    """One `realtimeInput.video` message per sign the camera shows in turn."""
    from benchmarks.vision import sign  # (that module imports this one)

    return [
        json.dumps(
            {
                "realtimeInput": {
                    "video": {"mimeType": "image/jpeg", "data": base64.b64encode(jpeg).decode()}
                }
            }
        )
        for jpeg in (sign(word, i) for i, word in enumerate(CAMERA_WORDS))
    ]


class Feeder:
    """The session's audio stream and its clock: `sent` samples so far, paced at `pace` times real
    time from the moment the pace was last set. Speech handed to `say` goes out next, in place
    of the background."""

    def __init__(self, floor: np.ndarray, pace: float, fps: float = 0.0) -> None:
        self.floor = floor
        self.fps = fps  # camera frames a simulated second, sent along with the audio
        self.camera = camera_messages() if fps > 0 else []
        self.frames_sent = 0
        self.noise = [
            Frame(audio_message(floor[i : i + CHUNK].tobytes()), CHUNK)
            for i in range(0, floor.size - CHUNK + 1, CHUNK)
        ]
        self.next_noise = 0
        self.speech: deque[Frame] = deque()
        self.sent = 0
        self.pace = pace
        self.since = (time.perf_counter(), 0)
        self.fast_samples = 0  # sent, and the wall time it took, at a pace other than 1
        self.fast_wall = 0.0

    @property
    def seconds(self) -> float:
        return self.sent / RATE

    def set_pace(self, pace: float) -> None:
        now = time.perf_counter()
        if self.pace != 1.0:
            began, at = self.since
            self.fast_samples += self.sent - at
            self.fast_wall += now - began
        self.pace = pace
        self.since = (now, self.sent)

    def achieved(self) -> str:
        if not self.fast_wall:
            return "-"
        return f"{self.fast_samples / RATE / self.fast_wall:.1f}x"

    def say(self, utterance: Utterance, on_mark: Callable[[float], None]) -> None:
        """Queue `utterance`; `on_mark` gets the instant of its last voiced sample."""
        pcm = over(utterance.pcm, self.floor)
        step = 2 * CHUNK
        mark_chunk, offset = divmod(utterance.last_voiced, CHUNK)
        for n, i in enumerate(range(0, len(pcm), step)):
            piece = pcm[i : i + step]
            mark = on_mark if n == mark_chunk else None
            self.speech.append(Frame(audio_message(piece), len(piece) // 2, mark, offset))

    def _due(self) -> float:
        began, at = self.since
        return began + (self.sent - at) / RATE / self.pace

    async def run(self, soak: Soak) -> None:
        while True:
            await soak.ready.wait()
            live = soak.live
            assert live is not None
            delay = self._due() - time.perf_counter()
            # Sleep even when late: a send that does not block would never let the reader run.
            await asyncio.sleep(max(delay, 0))
            if delay > 0:
                continue  # the pace, the speech queue or the connection may have changed
            speaking = bool(self.speech)
            frame = self.speech[0] if speaking else self.noise[self.next_noise]
            sent = time.perf_counter()
            try:
                await live.ws.send(frame.message)
            except ConnectionClosed:
                if self.speech:
                    self.speech.clear()
                    soak.speech_cut()
                while soak.live is live:  # until the reader has reconnected
                    await asyncio.sleep(POLL_S)
                continue
            if speaking:
                self.speech.popleft()
            else:
                self.next_noise = (self.next_noise + 1) % len(self.noise)
            self.sent += frame.samples
            if frame.on_mark is not None:
                frame.on_mark(sent + frame.offset / RATE)
            if self.camera and self.seconds * self.fps >= self.frames_sent:
                scene = int(self.seconds // CAMERA_SCENE_S) % len(self.camera)
                with contextlib.suppress(ConnectionClosed):  # the reader reconnects
                    await live.ws.send(self.camera[scene])
                self.frames_sent += 1


# --- the session ----------------------------------------------------------------------------


@dataclass
class Asked:
    """One question of the soak."""

    n: int
    turn: Turn
    at_s: float  # simulated second the question was started
    resumed: bool = False  # the connection was replaced while it waited for its answer

    @property
    def lost(self) -> bool:
        return self.turn.complete_at is None

    def row(self, cut: bool) -> str:
        def ms(at: float | None) -> str:
            value = self.turn.since(at)
            return "     -" if value is None else f"{value * 1e3:6.0f}"

        t = self.turn
        notes = [note for note, on in (("window cut", cut), ("resumed", self.resumed)) if on]
        if len(t.heard) > 1:
            notes.append(f"{len(t.heard)} transcriptions")
        if t.error:
            notes.append(f"LOST: {t.error}")
        extra = f"  [{'; '.join(notes)}]" if notes else ""
        prompt = "-" if t.prompt_tokens is None else str(t.prompt_tokens)
        cached = "-" if t.cached_tokens is None else str(t.cached_tokens)
        return (
            f"  #{self.n:<3} {clock(self.at_s)}  asr {ms(t.transcription_at)} text "
            f"{ms(t.first_text_at)} done {ms(t.complete_at)} ms  prompt {prompt:>5} cached "
            f"{cached:>5}  heard {' | '.join(t.heard)!r} answer {t.answer[:40]!r}{extra}"
        )


@dataclass(frozen=True)
class Reconnect:
    at_s: float
    cause: str
    wall_s: float  # from the decision (or the close) to setupComplete on the new connection
    turn_in_flight: bool


@dataclass(frozen=True)
class Mark:
    """A memory reading of the server process."""

    at_s: float
    wall_s: float
    rss: int
    anon: int
    turns: int  # answered so far
    prompt: int | None  # the last answered turn's promptTokenCount
    reconnects: int

    def cells(self) -> tuple[str, ...]:
        return (
            clock(self.at_s), f"{self.wall_s:.0f}", f"{self.rss / MIB:.1f}",
            f"{self.anon / MIB:.1f}", str(self.turns),
            "-" if self.prompt is None else str(self.prompt), str(self.reconnects),
        )  # fmt: skip


MARK_HEAD = ("sim time", "wall s", "RSS MiB", "anon MiB", "turns", "prompt tok", "reconnects")
MARK_WIDTHS = (8, 6, 8, 8, 5, 10, 10)


def clock(seconds: float) -> str:
    minutes, rest = divmod(int(seconds), 60)
    return f"{minutes:3d}:{rest:02d}"


class Soak:
    """Drives the session: reads every server message, reconnects when the server asks, asks
    the questions on the simulated clock and takes the memory readings."""

    def __init__(self, args: argparse.Namespace, server: BenchServer) -> None:
        self.args = args
        self.server = server
        self.feeder = Feeder(background(NOISE_S), args.speedup, args.fps)
        self.live: Live | None = None
        self.ready = asyncio.Event()  # a connection is set up
        self.handle: str | None = None
        self.went_away = False  # a goAway came on the current connection
        self.saved = True  # a sessionResumptionUpdate came after the last turnComplete
        self.current: Asked | None = None
        self.asked: list[Asked] = []
        self.reconnects: list[Reconnect] = []
        self.goaways = 0
        self.strays: list[str] = []  # server content while no question was waiting
        self.marks: list[Mark] = []
        total = int(args.minutes * 60)
        warmup = int(args.warmup_minutes * 60)
        self.mark_at = sorted({*range(0, total + 1, MARK_EVERY_S), warmup, total})
        self.started = time.perf_counter()

    # --- connection ---------------------------------------------------------------------

    async def connect(self, why: str) -> None:
        """Set up a connection (resuming once there is a handle); `why` names it if it fails."""
        args = self.args
        extra: dict[str, Any] = {
            "contextWindowCompression": {
                "triggerTokens": args.trigger_tokens,
                "slidingWindow": {"targetTokens": args.target_tokens},
            },
            "sessionResumption": {"handle": self.handle} if self.handle else {},
            "systemInstruction": {"parts": [{"text": INSTRUCTION}]},
        }
        try:
            self.live = await Live.open(self.server.ws_url, args.model, "TEXT", MAX_TOKENS,
                                        SETUP_TIMEOUT_S, extra)  # fmt: skip
        except (OSError, InvalidHandshake, ConnectionClosed, RuntimeError, TimeoutError) as exc:
            raise SessionFailed(f"{why} failed: {exc!r}") from exc
        self.went_away = False
        self.ready.set()

    async def reconnect(self, cause: str) -> None:
        began = time.perf_counter()
        old = self.live
        assert old is not None
        self.ready.clear()
        while not old.inbox.empty():  # what the old connection said before it went
            item = old.inbox.get_nowait()
            if item is not None:
                self.dispatch(*item)
        await old.close()
        if self.handle is None:
            raise SessionFailed(f"{cause} before any sessionResumptionUpdate")
        await self.connect(f"resuming after {cause}")
        waiting = self.current is not None and self.current.turn.complete_at is None
        if waiting and self.current is not None:
            self.current.resumed = True
        done = Reconnect(self.feeder.seconds, cause, time.perf_counter() - began, waiting)
        self.reconnects.append(done)
        self.say(f"  -- reconnected at {clock(done.at_s)} after {cause} in {done.wall_s:.2f} s"
                 + (" (a turn was waiting for its answer)" if waiting else ""))  # fmt: skip

    async def closed(self) -> None:
        assert self.live is not None
        code = self.live.ws.close_code
        if code != 1000:
            raise SessionFailed(f"the server {self.live.closed}")
        await self.reconnect("goAway, then close 1000" if self.went_away else "close 1000")

    def speech_cut(self) -> None:
        if self.current is not None:
            self.current.turn.error = "its speech was cut off by a closed connection"

    # --- reading ------------------------------------------------------------------------

    def dispatch(self, at: float, message: dict[str, Any]) -> None:
        update = message.get("sessionResumptionUpdate")
        if update is not None:
            self.handle = update.get("newHandle") or self.handle
            self.saved = True
        if "goAway" in message:
            self.went_away = True
            self.goaways += 1
        content = message.get("serverContent")
        if content is None:
            return
        asked = self.current
        if asked is not None and asked.turn.complete_at is None:
            asked.turn.absorb(at, message)
            if asked.turn.complete_at is not None:
                self.saved = False
        else:
            self.strays.append(",".join(sorted(content)))

    def idle(self) -> bool:
        return self.current is None and self.saved

    async def pump(self, done: Callable[[], bool], deadline: float = math.inf) -> bool:
        """Read the session until `done()`, reconnecting when the server asks; False when
        `deadline` passes first."""
        while not done():
            self.take_marks()
            if self.went_away and self.idle():
                await self.reconnect("goAway")
                continue
            left = deadline - time.perf_counter()
            if left <= 0:
                return False
            assert self.live is not None
            try:
                item = await asyncio.wait_for(self.live.inbox.get(), min(left, POLL_S))
            except TimeoutError:
                continue
            if item is None:
                await self.closed()
                continue
            self.dispatch(*item)
        return True

    # --- the run ------------------------------------------------------------------------

    def say(self, text: str) -> None:
        print(text, flush=True)

    def take_marks(self) -> None:
        while self.mark_at and self.feeder.seconds >= self.mark_at[0]:
            rss, anon = memory(self.server.pid)
            answered = [a for a in self.asked if not a.lost]
            prompt = answered[-1].turn.prompt_tokens if answered else None
            mark = Mark(self.mark_at.pop(0), time.perf_counter() - self.started, rss, anon,
                        len(answered), prompt, len(self.reconnects))  # fmt: skip
            self.marks.append(mark)
            self.say("  " + " | ".join(c.rjust(w) for c, w in zip(mark.cells(), MARK_WIDTHS,
                                                                    strict=True)))  # fmt: skip

    async def until(self, seconds: float) -> None:
        """Read on while the simulated clock reaches `seconds`."""
        await self.pump(lambda: self.feeder.seconds >= seconds)

    async def ask(self, n: int, utterance: Utterance) -> None:
        await self.pump(lambda: not self.went_away)  # a fresh connection first, if one is due
        asked = Asked(n, Turn(f"#{n}", utterance.text), self.feeder.seconds)
        self.asked.append(asked)
        self.current = asked
        turn = asked.turn
        self.feeder.set_pace(1.0)
        settled = time.perf_counter() + SETTLE_S
        await self.pump(lambda: time.perf_counter() >= settled)
        self.feeder.say(utterance, turn.mark)
        deadline = time.perf_counter() + utterance.seconds + TURN_TIMEOUT_S
        if not await self.pump(
            lambda: turn.complete_at is not None or turn.error is not None, deadline
        ):
            turn.error = "no turnComplete in time"
        self.feeder.speech.clear()
        self.feeder.set_pace(self.args.speedup)
        self.current = None
        answered = [a for a in self.asked[:-1] if not a.lost]
        cut = bool(answered) and is_cut(answered[-1].turn, turn)
        self.say(asked.row(cut))

    async def run(self, questions: Sequence[Utterance]) -> None:
        every, total = self.args.question_every_s, self.args.minutes * 60
        await self.connect("the session's setup")
        self.started = time.perf_counter()
        self.feeder.set_pace(self.args.speedup)
        feeding = asyncio.create_task(self.feeder.run(self))
        self.say("  " + " | ".join(h.rjust(w) for h, w in zip(MARK_HEAD, MARK_WIDTHS, strict=True)))
        try:
            n = 0
            while (at := (n + 0.5) * every) < total:
                await self.until(at)
                await self.ask(n + 1, questions[n % len(questions)])
                n += 1
            await self.until(total)
            self.take_marks()
        finally:
            self.feeder.set_pace(1.0)  # closes the account of the fast part
            feeding.cancel()
            if self.live is not None:
                await self.live.close()


# --- report ---------------------------------------------------------------------------------


def is_cut(before: Turn, after: Turn) -> bool:
    """The sliding window dropped turns between two answered turns."""
    return (
        before.prompt_tokens is not None
        and after.prompt_tokens is not None
        and after.prompt_tokens < before.prompt_tokens
    )


def median_s(asked: Sequence[Asked], at: Callable[[Turn], float | None]) -> float | None:
    values = [v for a in asked if (v := a.turn.since(at(a.turn))) is not None]
    return statistics.median(values) if values else None


def ticked(ok: bool) -> str:
    return "✔" if ok else "✘"


def verdict(soak: Soak, log: str) -> str:
    args = soak.args
    warmup_s = args.warmup_minutes * 60
    answered = [a for a in soak.asked if not a.lost]
    timed = [a for a in answered if not a.resumed and a.at_s >= warmup_s]
    first, last = timed[:SIDE], timed[-SIDE:]
    rows: list[tuple[str, ...]] = []

    warm = next((m for m in soak.marks if m.at_s >= warmup_s), None)
    end = soak.marks[-1] if soak.marks else None
    if warm is not None and end is not None and end.at_s > warm.at_s:
        growth = end.rss / warm.rss - 1
        rows.append(("server RSS (MiB)", f"{warm.rss / MIB:.1f}", f"{end.rss / MIB:.1f}",
                     f"{growth:+.1%}", f"<= +{GOAL_RSS_GROWTH:.0%}",
                     ticked(growth <= GOAL_RSS_GROWTH)))  # fmt: skip
        rows.append(("  of it anonymous (MiB)", f"{warm.anon / MIB:.1f}", f"{end.anon / MIB:.1f}",
                     f"{end.anon / warm.anon - 1:+.1%}", "-", ""))  # fmt: skip
    else:
        rows.append(("server RSS (MiB)", "-", "-", "-", f"<= +{GOAL_RSS_GROWTH:.0%}",
                     "✘ no reading after warm-up"))  # fmt: skip

    def latency(name: str, at: Callable[[Turn], float | None], goal: bool) -> None:
        a, b = median_s(first, at), median_s(last, at)
        if a is None or b is None:
            rows.append((name, fmt_s(a), fmt_s(b), "-", "-", "✘ no data" if goal else ""))
            return
        ratio = b / a
        rows.append((name, fmt_s(a), fmt_s(b), f"{ratio:.2f}x",
                     f"<= {GOAL_LATENCY_RATIO:g}x" if goal else "-",
                     ticked(ratio <= GOAL_LATENCY_RATIO) if goal else ""))  # fmt: skip

    latency("first text, median (s)", lambda t: t.first_text_at, True)
    latency("turn complete, median (s)", lambda t: t.complete_at, False)
    latency("input transcription, median (s)", lambda t: t.transcription_at, False)

    def share(sample: Sequence[Asked]) -> str:
        values = [t.cached_tokens / t.prompt_tokens for a in sample
                  if (t := a.turn).prompt_tokens and t.cached_tokens is not None]  # fmt: skip
        return f"{statistics.median(values):.0%}" if values else "-"

    rows.append(("cached share of the prompt, median", share(first), share(last), "-", "-", ""))
    prompts = [p for a in answered if (p := a.turn.prompt_tokens) is not None]
    window = f"window {args.trigger_tokens}->{args.target_tokens}"
    rows.append(("prompt tokens (min, max)", str(min(prompts, default=0)),
                 str(max(prompts, default=0)), "-", window, ""))  # fmt: skip
    cuts = sum(is_cut(a.turn, b.turn) for a, b in pairwise(answered))
    logged = log.count("the sliding window dropped")
    rows.append(("window cuts (prompt tokens dropping)", "-", str(cuts),
                 f"server log: {logged}", "-", ""))  # fmt: skip
    waiting = sum(r.turn_in_flight for r in soak.reconnects)
    rows.append(("reconnects", "-", str(len(soak.reconnects)),
                 f"{soak.goaways} goAway, {waiting} with a turn waiting", "-", ""))  # fmt: skip
    lost = len(soak.asked) - len(answered)
    rows.append(("turns lost", "-", f"{lost} of {len(soak.asked)}", "-", "0",
                 ticked(lost == 0)))  # fmt: skip
    head = ("measure", f"warm-up / first {SIDE}", f"end / last {SIDE}", "change", "goal", "")
    overlap = " (they overlap: too few turns)" if len(timed) < 2 * SIDE else ""
    return (
        f"first/last {SIDE}: answered turns asked after the {args.warmup_minutes:g}-minute "
        f"warm-up, resumed ones left out ({len(timed)} such turns){overlap}\n" + table(rows, head)
    )


# --- main -----------------------------------------------------------------------------------


async def soak_run(soak: Soak, questions: list[Utterance], warm_up: Utterance) -> str | None:
    """The run; why the session failed, or None."""
    bench = Bench(soak.server, soak.args.model, verbose=False)
    began = time.perf_counter()
    await bench.wait_ready(warm_up)
    soak.say(f"server ready for Live in {time.perf_counter() - began:.1f} s (after /healthz)")
    try:
        await soak.run(questions)
    except SessionFailed as exc:
        return str(exc)
    return None


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="benchmarks.soak", description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=DEFAULT_MODEL, choices=[s.id for s in BUILTIN_MODELS])
    parser.add_argument("--context-size", type=int, help="the server's (default: its own)")
    numbers: list[tuple[str, type, float, str]] = [
        ("--minutes", float, 60, "simulated minutes"),
        ("--speedup", float, 30, "pace of the background between questions, x real time"),
        ("--question-every-s", float, 60, "simulated seconds between questions"),
        ("--warmup-minutes", float, 10, "simulated minutes before the baseline readings"),
        ("--trigger-tokens", int, 800, "contextWindowCompression.triggerTokens"),
        ("--target-tokens", int, 400, "contextWindowCompression.slidingWindow.targetTokens"),
        ("--max-connection-s", float, 120, "the server's connection limit, wall seconds"),
        ("--fps", float, 1, "camera frames a simulated second (0: no camera)"),
    ]
    for flag, kind, default, meaning in numbers:
        parser.add_argument(flag, type=kind, default=kind(default),
                            help=f"{meaning} (default {default:g})")  # fmt: skip
    parser.add_argument("--server-log", type=Path, help="keep a copy of the server's log here")
    args = parser.parse_args(argv)
    if not 0 <= args.warmup_minutes < args.minutes or args.speedup < 1:
        parser.error("need 0 <= --warmup-minutes < --minutes and --speedup >= 1")
    if not 0 < args.target_tokens < args.trigger_tokens:
        parser.error("need 0 < --target-tokens < --trigger-tokens")
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # `kill` also stops the server

    started = time.perf_counter()
    cache = speech_cache()
    questions = [synthesise(text, cache) for text in SOAK_QUESTIONS]
    warm_up = synthesise(WARM_UP, cache)
    flags = ["--live-max-connection-s", f"{args.max_connection_s:g}"]
    if args.context_size is not None:
        flags += ["--context-size", str(args.context_size)]
    print(
        f"model {args.model}; {args.minutes:g} simulated minutes, a question every "
        f"{args.question_every_s:g} s, background at {args.speedup:g}x; window "
        f"{args.trigger_tokens}->{args.target_tokens} tokens; connection limit "
        f"{args.max_connection_s:g} s"
        f"; speech in {time.perf_counter() - started:.1f} s; load average "
        f"{os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs",
        flush=True,
    )
    failure: str | None = None
    with (
        tempfile.TemporaryDirectory(prefix="flashlive-bench-soak-") as tmp,
        server_process(args.model, Path(tmp), *flags) as server,
    ):
        print(f"server healthy after {time.perf_counter() - started:.1f} s", flush=True)
        soak = Soak(args, server)
        try:
            failure = asyncio.run(soak_run(soak, questions, warm_up))
        finally:
            log = server.log()
            if args.server_log is not None:
                args.server_log.write_text(log)
            print("\nserver memory every 5 simulated minutes:")
            print(table([m.cells() for m in soak.marks], MARK_HEAD))
            print()
            print(verdict(soak, log))
            if failure is not None:
                print(f"\n!!! SESSION FAILED at {clock(soak.feeder.seconds)}: {failure} !!!")
            lost = [a for a in soak.asked if a.lost]
            if lost:
                print(f"\n!!! {len(lost)} TURNS LOST !!!")
                print("\n".join(a.row(cut=False) for a in lost))
            if soak.strays:
                print(f"\nserver content while no question waited: {len(soak.strays)} messages "
                      f"({', '.join(sorted(set(soak.strays)))})")  # fmt: skip
            print("\nwhere the time goes (server log; ASR is before generation starts):")
            print(breakdown(log))
            notes = server_notes(log)
            if notes:
                print(f"\nserver log: {len(notes)} notable lines (first 15):")
                print("\n".join(f"  {line}" for line in notes[:15]))
    wall = time.perf_counter() - started
    print(f"\ntotal {wall:.0f} s wall for {args.minutes:g} simulated minutes (the background "
          f"between questions went at {soak.feeder.achieved()}, asked {args.speedup:g}x); load "
          f"average at the end {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs; "
          f"{soak.feeder.frames_sent} camera frames sent, a new sign every "
          f"{CAMERA_SCENE_S:g} simulated s)")  # fmt: skip


if __name__ == "__main__":
    main()
