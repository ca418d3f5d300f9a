"""Ten thousand random and malformed client events fed to the Live session core.

A seeded generator builds frames (valid messages, broken JSON, random bytes, oversize frames,
messages with wrong fields or values) and interleaves the driver's own events (VAD, ticks,
turns taken and answered, utterances, takeovers). The core must never raise, and every close it
asks for must carry a typed error with a documented close code; a malformed frame must close
with the code the protocol documents for it (1008 in the setup, 1007 after it, 1009 oversize).
"""

from __future__ import annotations

import base64
import json
import random
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from flashlive.api.errors import close_code
from flashlive.errors import FlashliveError, InvalidArgument, ResourceExhausted
from flashlive.live import actions as act
from flashlive.live.core import Opened, SessionCore, State
from flashlive.live.frames import UserTurn, user_text
from flashlive.live.services import LiveLimits
from flashlive.live.session import Conversation, LiveConfig, Window
from flashlive.perception.vad import SpeechEnded, SpeechPaused, SpeechResumed, SpeechStarted
from flashlive.protocol.content import Content
from flashlive.protocol.live import parse_client_message

EVENTS = 20_000
DOCUMENTED = {1000, 1007, 1008, 1009, 1013}
WORDS = ["hi", "what", "time", "is", "it", "", " ", "é", "\u0000", "🙂", "x" * 50]
MIMES = [
    "audio/pcm",
    "audio/pcm;rate=16000",
    "audio/pcm;rate=8000",
    "audio/pcm;rate=٤٤١٠٠",
    "audio/pcm;rate=1",
    "audio/L16;rate=24000",
    "audio/wav",
    "image/jpeg",
    "image/png",
    "image/tiff",
    "",
    "audio/pcm;rate=",
]


class FakeTurn:
    def __init__(self, version: int) -> None:
        self.interrupted = False
        self.sent_all = False
        self.version = version

    def heard(self) -> str:
        return "partly"


def words(content: Content) -> int:
    return sum(len((p.text or "").split()) for p in content.parts) + 1


class Fuzzer:
    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.events = 0
        self.closes: dict[int, int] = {}
        self.sessions = 0
        self._new_session()

    # --- one session, driven as the driver drives it --------------------------------------

    def _new_session(self) -> None:
        rng = self.rng
        self.sessions += 1
        self.now = 0.0
        over_quota = rng.random() < 0.05

        def quota(key: str) -> None:
            if over_quota and rng.random() < 0.3:
                raise ResourceExhausted("over quota")

        limits = LiveLimits(
            max_frame_bytes=rng.choice([64, 4096] + [4 * 1024 * 1024] * 8),
            turn_queue_size=rng.choice([1, 2, 8]),
            max_connection_s=rng.choice([0.0, 5.0, 60.0]),
            goaway_notice_s=rng.choice([1.0, 10.0]),
        )
        self.core = SessionCore(
            f"s{self.sessions}", limits, now=0.0, vision=rng.random() < 0.5, quota=quota
        )
        self.pending: list[UserTurn] = []
        self.turns: list[FakeTurn] = []

    def run(self, actions: list[act.Action]) -> None:
        for action in actions:
            if isinstance(action, act.Close):
                self._closed(action)
            elif isinstance(action, act.BeginSetup):
                self._open(action)
            elif isinstance(action, act.QueueTurn):
                self.pending.append(action.turn)
            elif isinstance(action, act.Answer):
                turn = FakeTurn(self.core.conversation.version)
                self.turns.append(turn)
                self.run(self.core.turn_started(turn))

    def _closed(self, close: act.Close) -> None:
        error = close.error
        assert error is None or isinstance(error, FlashliveError), error
        code = 1000 if error is None else close_code(error)
        assert code in DOCUMENTED, (code, error)
        assert self.core.state is State.CLOSED
        self.closes[code] = self.closes.get(code, 0) + 1

    def _open(self, begin: act.BeginSetup) -> None:
        rng = self.rng
        try:
            config = LiveConfig.from_setup(begin.setup)
            trigger = rng.choice([None, 30, 200])
            window = Window(rng.choice([20, 400]), trigger, (trigger or 0) // 2)
        except FlashliveError as exc:
            self.run(self.core.failed(exc))
            return
        opened = Opened(
            config,
            window,
            Conversation(count=words),
            resumable=config.resumable,
            resumed=rng.random() < 0.2,
            token_left_s=rng.choice([None, 3.0, 100.0]),
        )
        self.run(self.core.setup_ready(opened, self.now))

    # --- events -----------------------------------------------------------------------------

    def step(self) -> None:
        self.events += 1
        if self.core.state is State.CLOSED:
            self._new_session()
        choice = self.rng.random()
        if choice < 0.55 or self.core.state is State.AWAITING_SETUP:
            self._frame()
        elif choice < 0.70:
            self.run(self.core.vad_event(self._vad_event()))
        elif choice < 0.76:
            self.now += self.rng.choice([0.1, 1.0, 5.0, 30.0])
            self.run(self.core.tick(self.now))
        elif choice < 0.86:
            self._turn_event()
        elif choice < 0.90:
            said = user_text(self.rng.choice(WORDS) or "hi")
            self.run(self.core.utterance(UserTurn(said, transcript="hi")))
        elif choice < 0.95:
            if self.rng.random() < 0.5:
                self.run(self.core.activity_start())
            else:
                self.core.activity_end()
        elif choice < 0.97:
            self.run(self.core.taken_over(None))
        else:
            self.run(self.core.client_gone())

    def _turn_event(self) -> None:
        rng = self.rng
        if self.pending and rng.random() < 0.6:
            self.run(self.core.take_turn(self.pending.pop(0)))
        elif self.turns:
            turn = self.turns.pop(0)
            if rng.random() < 0.7 and not turn.interrupted:
                turn.sent_all = True
                self.run(self.core.answer_sent(rng.choice(WORDS), []))
            self.core.turn_over(turn)

    def _vad_event(self) -> Any:
        rng = self.rng
        sample = rng.choice([0, 512, 1024, 3200])
        audio = np.zeros(rng.choice([0, 160]), dtype=np.float32)
        kind = rng.choice([SpeechStarted, SpeechPaused, SpeechResumed, SpeechEnded])
        if kind in (SpeechPaused, SpeechEnded):
            return kind(sample, audio)
        return kind(sample)

    def _frame(self) -> None:
        rng = self.rng
        kind = rng.random()
        # Sessions that live a while reach deeper states: after the setup, fewer broken frames.
        scale = 1.0 if self.core.state is State.AWAITING_SETUP else 0.15
        if kind < 0.08 * scale:
            raw: str | bytes = bytes(rng.getrandbits(8) for _ in range(rng.randint(0, 40)))
        elif kind < 0.2 * scale:
            raw = self._broken(json.dumps(self._message()))
        else:
            raw = json.dumps(self._message())
        state = self.core.state
        out = self.core.frame_received(len(raw))
        if out:
            assert code_of(out) == 1009
            self.run(out)
            return
        try:
            message = parse_client_message(raw)
        except InvalidArgument as exc:
            out = self.core.malformed(exc)
            expected = 1008 if state is State.AWAITING_SETUP else 1007
            assert state is State.CLOSED or code_of(out) == expected, (raw, out)
            self.run(out)
            return
        self.run(self.core.message(message))

    def _broken(self, text: str) -> str:
        rng = self.rng
        at = rng.randint(0, max(len(text) - 1, 0))
        return rng.choice(
            [text[:at], text[:at] + rng.choice('{}[]",:\\x') + text[at:], text + "}", "[" + text]
        )

    def _message(self) -> dict[str, Any]:
        rng = self.rng
        if self.core.state is State.AWAITING_SETUP and rng.random() < 0.8:
            return {"setup": self._setup()}
        plain = rng.random()
        if plain < 0.3:
            return {"realtimeInput": {"text": rng.choice(WORDS[:5])}}
        if plain < 0.5:
            data = base64.b64encode(b"\x01\x00" * 160).decode()
            return {"realtimeInput": {"audio": {"mimeType": "audio/pcm", "data": data}}}
        if plain < 0.65:
            turn = {"role": "user", "parts": [{"text": rng.choice(WORDS[:5])}]}
            return {"clientContent": {"turns": [turn], "turnComplete": rng.random() < 0.7}}
        odd: list[Callable[[], dict[str, Any]]] = [
            lambda: {"clientContent": self._client_content()},
            lambda: {"realtimeInput": self._realtime()},
            lambda: {"toolResponse": {"functionResponses": self._responses()}},
            lambda: {"setup": self._setup()},
            lambda: {"clientContent": {}, "realtimeInput": {}},
            lambda: {rng.choice(["unknown", "setupp", ""]): {}},
            lambda: {},
        ]
        return rng.choice(odd)()

    def _setup(self) -> dict[str, Any]:
        rng = self.rng
        model = "models/m" if rng.random() < 0.85 else rng.choice(["m", "", "models/", 3])
        setup: dict[str, Any] = {"model": model}
        options: list[tuple[str, Any]] = [
            ("sessionResumption", {}),
            ("sessionResumption", {"handle": "h"}),
            ("historyConfig", {"initialHistoryInClientContent": True}),
            ("generationConfig", {"responseModalities": ["TEXT"], "temperature": 0.2}),
            ("generationConfig", {"responseModalities": ["VIDEO"]}),
            ("realtimeInputConfig", {"automaticActivityDetection": {"disabled": True}}),
            ("realtimeInputConfig", {"activityHandling": "NO_INTERRUPTION"}),
            ("realtimeInputConfig", {"turnCoverage": "TURN_INCLUDES_ONLY_ACTIVITY"}),
            (
                "realtimeInputConfig",
                {"automaticActivityDetection": {"prefixPaddingMs": rng.choice([-1, 20, 10**6])}},
            ),
            ("contextWindowCompression", {"slidingWindow": {"targetTokens": rng.randint(0, 99)}}),
            ("contextWindowCompression", {"triggerTokens": rng.choice([0, 50, "x"])}),
            ("cachedContent", "cachedContents/c"),
            ("inputAudioTranscription", {}),
            ("bogusField", 1),
        ]
        for name, value in rng.sample(options, rng.randint(0, 3)):
            setup[name] = value
        return setup

    def _client_content(self) -> dict[str, Any]:
        rng = self.rng
        content: dict[str, Any] = {}
        if rng.random() < 0.8:
            content["turns"] = [self._content() for _ in range(rng.randint(0, 3))]
        if rng.random() < 0.6:
            content["turnComplete"] = rng.choice([True, False, "yes"])
        return content

    def _content(self) -> Any:
        rng = self.rng
        parts: list[Any] = [
            {"text": rng.choice(WORDS)},
            {"fileData": {"fileUri": "gs://x"}},
            {"inlineData": {"mimeType": "image/png", "data": "AAAA"}},
            {"functionCall": {"id": "c1", "name": "f", "args": {}}},
            {},
            "text",
        ]
        role = rng.choice(["user", "model", "system", None])
        content: dict[str, Any] = {"parts": rng.sample(parts, rng.randint(0, 2))}
        if role is not None:
            content["role"] = role
        return content if rng.random() < 0.95 else [content]

    def _realtime(self) -> dict[str, Any]:
        rng = self.rng
        given: dict[str, Any] = {}
        fields = [
            "text",
            "audio",
            "video",
            "mediaChunks",
            "audioStreamEnd",
            "activityStart",
            "activityEnd",
        ]
        for name in rng.sample(fields, rng.randint(0, 3)):
            if name == "text":
                given[name] = rng.choice(WORDS)
            elif name in ("audio", "video"):
                given[name] = self._blob()
            elif name == "mediaChunks":
                given[name] = [self._blob() for _ in range(rng.randint(0, 2))]
            elif name == "audioStreamEnd":
                given[name] = rng.choice([True, False])
            else:
                given[name] = {}
        return given

    def _blob(self) -> dict[str, Any]:
        rng = self.rng
        data = bytes(rng.getrandbits(8) for _ in range(rng.choice([0, 1, 2, 320])))
        encoded = rng.choice(
            [base64.b64encode(data).decode(), base64.urlsafe_b64encode(data).decode(), "***", "A"]
        )
        return {"mimeType": rng.choice(MIMES), "data": encoded}

    def _responses(self) -> list[Any]:
        rng = self.rng
        return [
            {"id": rng.choice(["c1", "c2", None]), "name": "f", "response": {"ok": 1}}
            for _ in range(rng.randint(0, 2))
        ]


def code_of(actions: list[act.Action]) -> int:
    assert actions and isinstance(actions[-1], act.Close), actions
    error = actions[-1].error
    return 1000 if error is None else close_code(error)


def test_ten_thousand_random_events_end_only_in_documented_closes() -> None:
    began = time.monotonic()
    fuzzer = Fuzzer(seed=12)
    while fuzzer.events < EVENTS:
        fuzzer.step()
    assert fuzzer.events >= 10_000
    assert time.monotonic() - began < 30.0
    # The run reached the interesting states: sessions opened, turns answered, every kind of close.
    assert fuzzer.sessions > 100
    assert {1007, 1008, 1009} <= set(fuzzer.closes)
