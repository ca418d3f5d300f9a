"""The Live session driver against scripted parts: no sockets, no models.

The real models and the official SDK are exercised in tests/integration/test_live.py; here the
generator, the speech models and the socket are doubles, so the session's policies (slow readers,
barge-in, disconnects, message order) can be pinned down exactly.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import numpy as np
from PIL import Image

from flashlive.api.live import serve_session
from flashlive.errors import NotFound
from flashlive.generation.service import MediaTokens
from flashlive.ledger.records import UsageRecord
from flashlive.live.driver import LiveSession
from flashlive.live.services import LiveLimits, LiveServices, Perception
from flashlive.perception.asr import Transcript
from flashlive.perception.vision import Observation, decode_image
from flashlive.protocol.content import Content, Part, Role
from flashlive.protocol.generate import (
    Candidate,
    GenerateContentRequest,
    GenerateContentResponse,
    UsageMetadata,
)
from flashlive.protocol.live import LiveGenerationConfig, Setup


class FakeTransport:
    def __init__(self, *, reads: int | None = None) -> None:
        self.inbound: asyncio.Queue[str | None] = asyncio.Queue()
        self.sent: list[dict[str, Any]] = []
        self.closed: tuple[int, str] | None = None
        self.reads = reads  # how many messages the client reads; None: all of them
        self.got_message = asyncio.Event()

    async def receive(self) -> str | bytes | None:
        return await self.inbound.get()

    async def send(self, text: str) -> None:
        if self.reads is not None and len(self.sent) >= self.reads:
            await asyncio.Event().wait()  # the client stopped reading: the socket never drains
        self.sent.append(json.loads(text))
        self.got_message.set()

    async def close(self, code: int, reason: str) -> None:
        self.closed = (code, reason)

    def client(self, message: dict[str, Any]) -> None:
        self.inbound.put_nowait(json.dumps(message))

    async def wait_for(self, predicate: Any, timeout: float = 5.0) -> dict[str, Any]:
        async with asyncio.timeout(timeout):
            while True:
                for message in self.sent:
                    if predicate(message):
                        return message
                self.got_message.clear()
                await self.got_message.wait()


class WordCountingEngine:
    """Counts a token per word; holds `context_size` tokens."""

    def __init__(self, context_size: int = 4096) -> None:
        self.info = SimpleNamespace(context_size=context_size)

    def count_tokens(self, text: str) -> int:
        return len(text.split())


class FakeModels:
    """One model, "m"; any name starting "gemini-" is an alias of it."""

    def __init__(self, context_size: int = 4096) -> None:
        self.engine = WordCountingEngine(context_size)

    async def get(self, model: str) -> object:
        if model != "m" and not model.startswith("gemini-"):
            raise NotFound(f"models/{model} is not found")
        return SimpleNamespace(engine=self.engine, spec=SimpleNamespace(id="m"))


class FakeGeneration:
    """Streams `pieces` with a delay between them; remembers requests and cancellations."""

    def __init__(self, pieces: list[str], delay: float = 0.0) -> None:
        self.pieces = pieces
        self.delay = delay
        self.requests: list[GenerateContentRequest] = []
        self.warmed: list[GenerateContentRequest] = []
        self.cancelled = 0
        self.finished = 0
        self.state_keys: set[str] = set()
        self.forgotten: list[str] = []
        self.media_tokens = MediaTokens()

    async def prepare(
        self, model: str, request: GenerateContentRequest, resolve_cache: object = None
    ) -> object:
        words = sum(len((p.text or "").split()) for c in request.contents for p in c.parts)
        return SimpleNamespace(tokens=[0] * (words + 10))  # 10: the chat scaffolding

    def forget_state(self, key: str) -> None:
        self.forgotten.append(key)

    async def warm(
        self,
        model: str,
        request: GenerateContentRequest,
        resolve_cache: object = None,
        state_key: str | None = None,
    ) -> bool:
        self.warmed.append(request)
        return True

    async def stream(
        self,
        model: str,
        request: GenerateContentRequest,
        resolve_cache: object = None,
        state_key: str | None = None,
    ) -> AsyncIterator[GenerateContentResponse]:
        self.requests.append(request)
        if state_key is not None:
            self.state_keys.add(state_key)
        try:
            for piece in self.pieces:
                await asyncio.sleep(self.delay)
                yield chunk(piece)
            final = chunk("")
            final.usage_metadata = UsageMetadata(
                prompt_token_count=7, candidates_token_count=len(self.pieces), total_token_count=0
            )
            yield final
            self.finished += 1
        except asyncio.CancelledError:
            self.cancelled += 1
            raise


class FakeVadModel:
    """Speech wherever the frame is loud."""

    def infer(self, frame: np.ndarray, state: Any) -> tuple[float, Any]:
        return (0.95 if float(np.abs(frame).mean()) > 0.05 else 0.01), state


class FakeTranscriber:
    def __init__(self, text: str) -> None:
        self.text = text
        self.calls = 0
        self.idle = True

    async def transcribe(self, client: str, audio: np.ndarray) -> Transcript:
        self.calls += 1
        return Transcript(self.text, 0.0, audio.size / 16000, 0.001)

    def close(self) -> None:
        pass


def chunk(text: str) -> GenerateContentResponse:
    return GenerateContentResponse(
        candidates=[Candidate(content=Content(role=Role.MODEL, parts=[Part(text=text)]))],
        model_version="m",
        response_id="r",
    )


async def loaded(value: Any) -> Any:
    return value


def services(generation: FakeGeneration, **limits: Any) -> LiveServices:
    perception = Perception()
    for name, value in (
        ("vad", FakeVadModel()),
        ("asr", FakeTranscriber("what time is it")),
        ("tts", None),
    ):
        getattr(perception, name).value = value
    return LiveServices(FakeModels(), generation, perception, LiveLimits(**limits))  # type: ignore[arg-type]


async def start(
    transport: FakeTransport, live: LiveServices, key_hash: str = "anonymous", **setup: Any
) -> asyncio.Task[None]:
    session = LiveSession(transport, live, key_hash=key_hash)
    task = asyncio.create_task(serve_session(session))
    transport.client({"setup": {"model": "models/m", **setup}})
    return task


def has(kind: str) -> Any:
    return lambda m: kind in m.get("serverContent", {})


async def test_a_text_turn_streams_then_completes_with_usage() -> None:
    transport, generation = FakeTransport(), FakeGeneration(["Hel", "lo"])
    task = await start(transport, services(generation))
    transport.client({"realtimeInput": {"text": "hi"}})
    done = await transport.wait_for(has("turnComplete"))
    assert transport.sent[0] == {
        "setupComplete": {"sessionId": transport.sent[0]["setupComplete"]["sessionId"]}
    }
    texts = [
        p["text"]
        for m in transport.sent
        for p in m.get("serverContent", {}).get("modelTurn", {}).get("parts", [])
    ]
    assert "".join(texts) == "Hello"
    assert done["usageMetadata"]["responseTokenCount"] == 2
    transport.inbound.put_nowait(None)
    await task
    assert transport.closed is None  # the client left: nothing to close


async def test_unknown_model_closes_1008() -> None:
    transport = FakeTransport()
    session = LiveSession(transport, services(FakeGeneration([])))
    transport.client({"setup": {"model": "models/nope"}})
    await serve_session(session)
    assert transport.closed is not None and transport.closed[0] == 1008
    assert "nope" in transport.closed[1]


async def test_a_client_that_stops_reading_is_closed_and_memory_stays_bounded() -> None:
    transport = FakeTransport(reads=1)  # setupComplete, then nothing
    generation = FakeGeneration(["x"] * 500, delay=0.01)  # 5 s of answer
    live = services(generation, send_timeout_s=0.2, outbox_size=4)
    session = LiveSession(transport, live)
    task = asyncio.create_task(serve_session(session))
    transport.client({"setup": {"model": "models/m"}})
    transport.client({"realtimeInput": {"text": "talk a lot"}})
    async with asyncio.timeout(5):
        await task
    assert transport.closed is not None and transport.closed[0] == 1008
    assert "read nothing" in transport.closed[1]
    assert session.outbox.qsize() <= 4
    assert generation.cancelled == 1  # closing the session stops its answer too


async def test_barge_in_keeps_what_was_said_and_cancels_the_rest() -> None:
    transport = FakeTransport()
    generation = FakeGeneration([f"w{i} " for i in range(200)], delay=0.01)
    task = await start(transport, services(generation))
    transport.client({"realtimeInput": {"text": "tell me a story"}})
    await transport.wait_for(has("modelTurn"))
    await asyncio.sleep(0.05)
    transport.client({"realtimeInput": {"text": "stop"}})
    await transport.wait_for(has("interrupted"))
    await transport.wait_for(lambda m: len(generation.requests) == 2 and has("turnComplete")(m))
    assert generation.cancelled == 1
    second = generation.requests[1].contents
    assert [c.role for c in second] == [Role.USER, Role.MODEL, Role.USER]
    heard = second[1].parts[0].text or ""
    assert heard.startswith("w0 w1") and len(heard.split()) < 200
    # Nothing of the first answer reaches the client after `interrupted`.
    cut = next(i for i, m in enumerate(transport.sent) if has("interrupted")(m))
    later = [
        p.get("text", "")
        for m in transport.sent[cut + 1 :]
        for p in m.get("serverContent", {}).get("modelTurn", {}).get("parts", [])
    ]
    assert len(later) <= 200 and all(t.startswith("w") for t in later)
    transport.inbound.put_nowait(None)
    await task


async def test_no_interruption_lets_the_answer_finish() -> None:
    transport = FakeTransport()
    generation = FakeGeneration([f"w{i} " for i in range(30)], delay=0.005)
    task = await start(
        transport,
        services(generation),
        realtimeInputConfig={"activityHandling": "NO_INTERRUPTION"},
    )
    transport.client({"realtimeInput": {"text": "one"}})
    await transport.wait_for(has("modelTurn"))
    transport.client({"realtimeInput": {"text": "two"}})
    async with asyncio.timeout(5):
        while generation.finished < 2:
            await asyncio.sleep(0.01)
    assert generation.cancelled == 0
    assert not any(has("interrupted")(m) for m in transport.sent)
    transport.inbound.put_nowait(None)
    await task


async def test_disconnect_cancels_the_answer_at_once() -> None:
    transport = FakeTransport()
    generation = FakeGeneration(["x"] * 1000, delay=0.01)
    task = await start(transport, services(generation))
    transport.client({"realtimeInput": {"text": "go"}})
    await transport.wait_for(has("modelTurn"))
    transport.inbound.put_nowait(None)
    async with asyncio.timeout(1):
        await task
    assert generation.cancelled == 1


async def test_speech_is_transcribed_into_a_user_turn() -> None:
    transport = FakeTransport()
    generation = FakeGeneration(["It is noon."])
    task = await start(transport, services(generation), inputAudioTranscription={})
    loud = (np.sin(np.arange(16000) / 3.0) * 8000).astype("<i2").tobytes()
    quiet = bytes(2 * 16000)
    for pcm in (loud, quiet):
        for i in range(0, len(pcm), 3200):
            data = base64.b64encode(pcm[i : i + 3200]).decode()
            transport.client(
                {"realtimeInput": {"audio": {"mimeType": "audio/pcm;rate=16000", "data": data}}}
            )
    heard = await transport.wait_for(has("inputTranscription"))
    assert heard["serverContent"]["inputTranscription"]["text"] == "what time is it"
    await transport.wait_for(has("turnComplete"))
    user = generation.requests[-1].contents[-1]
    assert user.role is Role.USER and user.parts[0].text == "what time is it"
    # While the second of speech went on, the words so far were prefilled.
    assert (
        generation.warmed and generation.warmed[0].contents[-1].parts[0].text == user.parts[0].text
    )
    transport.inbound.put_nowait(None)
    await task


class ListLedger:
    def __init__(self) -> None:
        self.records: list[UsageRecord] = []

    async def record(self, rec: UsageRecord) -> None:
        self.records.append(rec)


async def test_each_answered_turn_writes_one_usage_record() -> None:
    transport = FakeTransport()
    generation = FakeGeneration([f"w{i} " for i in range(200)], delay=0.01)
    live = services(generation)
    live.ledger = ledger = ListLedger()
    task = await start(transport, live, key_hash="k")
    transport.client({"realtimeInput": {"text": "tell me a story"}})
    await transport.wait_for(has("modelTurn"))
    transport.client({"realtimeInput": {"text": "stop"}})
    await transport.wait_for(has("interrupted"))
    await transport.wait_for(lambda m: len(generation.requests) == 2 and has("turnComplete")(m))
    await asyncio.sleep(0.05)
    transport.inbound.put_nowait(None)
    await task
    assert [(r.method, r.status, r.key_hash) for r in ledger.records] == [
        ("live.turn", 499, "k"),
        ("live.turn", 200, "k"),
    ]
    assert ledger.records[0].output_tokens["TEXT"] > 0  # cut off: what was streamed so far
    assert ledger.records[1].total_output == 200
    assert len({r.request_id for r in ledger.records}) == 2


async def test_a_session_opened_on_an_alias_bills_the_model_that_answered() -> None:
    transport, generation = FakeTransport(), FakeGeneration(["Hi."])
    live = services(generation)
    live.ledger = ledger = ListLedger()
    session = LiveSession(transport, live)
    task = asyncio.create_task(serve_session(session))
    transport.client({"setup": {"model": "models/gemini-3.8-live"}})
    transport.client({"realtimeInput": {"text": "hello"}})
    await transport.wait_for(has("turnComplete"))
    await asyncio.sleep(0.05)
    transport.inbound.put_nowait(None)
    await task
    assert [r.model for r in ledger.records] == ["m"]


async def test_a_key_over_its_quota_gets_no_more_turns() -> None:
    from flashlive.errors import ResourceExhausted

    transport, generation = FakeTransport(), FakeGeneration(["ok"])
    live = services(generation)
    turns: list[str] = []

    def quota(key_hash: str) -> None:
        turns.append(key_hash)
        if len(turns) > 1:
            raise ResourceExhausted("Quota exceeded: 1 requests per minute; retry in 42 s")

    live.quota = quota
    task = await start(transport, live, key_hash="k1")
    transport.client({"realtimeInput": {"text": "one"}})
    await transport.wait_for(has("turnComplete"))
    transport.client({"realtimeInput": {"text": "two"}})
    async with asyncio.timeout(5):
        await task
    assert transport.closed is not None and transport.closed[0] == 1013
    assert "retry in 42 s" in transport.closed[1]
    assert turns == ["k1", "k1"] and len(generation.requests) == 1


# --- hours-long sessions: resumption, goAway, the window ------------------------------------


def handle_of(transport: FakeTransport) -> str:
    updates = [
        m["sessionResumptionUpdate"] for m in transport.sent if "sessionResumptionUpdate" in m
    ]
    assert updates and all(u["resumable"] for u in updates)
    return str(updates[-1]["newHandle"])


def texts_of(transport: FakeTransport) -> str:
    return "".join(
        p.get("text", "")
        for m in transport.sent
        for p in m.get("serverContent", {}).get("modelTurn", {}).get("parts", [])
    )


async def test_a_resumable_session_sends_a_handle_after_setup_and_every_turn() -> None:
    transport, generation = FakeTransport(), FakeGeneration(["ok"])
    task = await start(transport, services(generation), sessionResumption={})

    def updates(n: int) -> Any:
        return lambda m: sum("sessionResumptionUpdate" in x for x in transport.sent) >= n

    await transport.wait_for(updates(1))
    for n, text in ((2, "one"), (3, "two")):
        transport.client({"realtimeInput": {"text": text}})
        await transport.wait_for(updates(n))
    kinds = [next(iter(m)) for m in transport.sent]
    assert kinds[:2] == ["setupComplete", "sessionResumptionUpdate"]
    # Each turn's update follows its turnComplete.
    completes = [i for i, m in enumerate(transport.sent) if has("turnComplete")(m)]
    assert all(kinds[i + 1] == "sessionResumptionUpdate" for i in completes)
    transport.inbound.put_nowait(None)
    await task


async def test_resuming_restores_the_history_and_settings() -> None:
    live = services(FakeGeneration(["first answer"]))
    transport = FakeTransport()
    task = await start(
        transport,
        live,
        sessionResumption={},
        systemInstruction={"parts": [{"text": "Be terse."}]},
    )
    transport.client({"realtimeInput": {"text": "remember seven"}})
    await transport.wait_for(has("turnComplete"))
    await transport.wait_for(
        lambda m: "sessionResumptionUpdate" in m and has("turnComplete")(transport.sent[-2])
    )
    handle = handle_of(transport)
    transport.inbound.put_nowait(None)
    await task

    generation = FakeGeneration(["second answer"])
    live.generation = generation  # type: ignore[assignment]
    again = FakeTransport()
    task = await start(again, live, sessionResumption={"handle": handle})
    again.client({"realtimeInput": {"text": "what number?"}})
    await again.wait_for(has("turnComplete"))
    request = generation.requests[-1]
    assert [c.parts[0].text for c in request.contents] == [
        "remember seven",
        "first answer",
        "what number?",
    ]
    assert request.system_instruction is not None
    assert request.system_instruction.parts[0].text == "Be terse."  # the saved setup, not a new one
    assert handle_of(again) == handle
    again.inbound.put_nowait(None)
    await task


async def test_a_turn_cut_off_by_a_dropped_socket_is_answered_after_resuming() -> None:
    live = services(FakeGeneration(["x "] * 1000, delay=0.01))
    transport = FakeTransport()
    task = await start(transport, live, sessionResumption={})
    await transport.wait_for(lambda m: "sessionResumptionUpdate" in m)
    handle = handle_of(transport)
    transport.client(
        {
            "clientContent": {
                "turns": [{"parts": [{"text": "the lost question"}]}],
                "turnComplete": True,
            }
        }
    )
    await transport.wait_for(has("modelTurn"))
    transport.inbound.put_nowait(None)  # the socket drops mid-answer
    await task

    generation = FakeGeneration(["regenerated"])
    live.generation = generation  # type: ignore[assignment]
    again = FakeTransport()
    task = await start(again, live, sessionResumption={"handle": handle})
    await again.wait_for(has("turnComplete"))  # answered without being asked again
    assert texts_of(again) == "regenerated"
    assert generation.requests[0].contents[-1].parts[0].text == "the lost question"
    again.inbound.put_nowait(None)
    await task


async def test_a_handle_is_bound_to_its_key_and_unknown_handles_are_refused() -> None:
    live = services(FakeGeneration(["ok"]))
    transport = FakeTransport()
    task = await start(transport, live, key_hash="alice", sessionResumption={})
    await transport.wait_for(lambda m: "sessionResumptionUpdate" in m)
    handle = handle_of(transport)
    transport.inbound.put_nowait(None)
    await task
    for key, given in (("mallory", handle), ("alice", "no-such-handle")):
        other = FakeTransport()
        await (await start(other, live, key_hash=key, sessionResumption={"handle": given}))
        assert other.closed is not None and other.closed[0] == 1008
        assert "unknown or has expired" in other.closed[1]


async def test_resuming_elsewhere_ends_the_old_connection() -> None:
    live = services(FakeGeneration(["ok"]))
    old = FakeTransport()
    old_task = await start(old, live, sessionResumption={})
    await old.wait_for(lambda m: "sessionResumptionUpdate" in m)
    new = FakeTransport()
    new_task = await start(new, live, sessionResumption={"handle": handle_of(old)})
    await new.wait_for(lambda m: "setupComplete" in m)
    async with asyncio.timeout(5):
        await old_task
    assert old.closed is not None and old.closed[0] == 1008
    assert "resumed on another connection" in old.closed[1]
    new.inbound.put_nowait(None)
    await new_task


async def test_go_away_comes_before_the_time_limit_close() -> None:
    transport = FakeTransport()
    live = services(FakeGeneration(["ok"]), max_connection_s=0.6, goaway_notice_s=0.4)
    task = await start(transport, live, sessionResumption={})
    async with asyncio.timeout(5):
        await task
    go_away = next(m["goAway"] for m in transport.sent if "goAway" in m)
    assert 0.3 <= float(go_away["timeLeft"].removesuffix("s")) <= 0.4
    assert transport.closed is not None and transport.closed[0] == 1000
    assert "resume" in transport.closed[1]


async def test_the_sliding_window_keeps_a_long_session_bounded() -> None:
    generation = FakeGeneration(["a longer answer of twelve words that fills the window up fast"])
    transport = FakeTransport()
    task = await start(
        transport,
        services(generation),
        contextWindowCompression={"triggerTokens": 110, "slidingWindow": {"targetTokens": 60}},
    )
    for i in range(60):  # ~20 tokens a turn: 20x the target
        transport.client({"realtimeInput": {"text": f"question number {i} please"}})
        async with asyncio.timeout(5):
            while generation.finished <= i:
                await asyncio.sleep(0.005)
    sizes = [
        sum(len((p.text or "").split()) + 6 for c in r.contents for p in c.parts)
        for r in generation.requests
    ]
    assert max(sizes) <= 110
    last = generation.requests[-1].contents
    assert last[-1].parts[0].text == "question number 59 please"
    assert last[0].parts[0].text != "question number 0 please"
    # A cut made as an answer ends is computed right away, before the next question arrives:
    # a warm-up of the shortened context, which ends with the model's answer.
    between = [r.contents for r in generation.warmed if r.contents[-1].role is Role.MODEL]
    assert between and all(len(c) < len(generation.requests[-2].contents) + 2 for c in between)
    transport.inbound.put_nowait(None)
    await task


async def test_without_compression_a_full_context_closes_with_a_reason() -> None:
    transport = FakeTransport()
    live = services(FakeGeneration(["ok"]))
    live.models = FakeModels(context_size=120)  # type: ignore[assignment]
    task = await start(transport, live)
    async with asyncio.timeout(5):
        for turn in range(10):
            transport.client({"realtimeInput": {"text": "w " * 20}})
            while not task.done() and sum(has("turnComplete")(m) for m in transport.sent) <= turn:
                await asyncio.sleep(0.005)
        await task
    assert transport.closed is not None and transport.closed[0] == 1008
    assert "context is full" in transport.closed[1]


async def test_the_engine_state_is_kept_per_session_and_forgotten_at_the_end() -> None:
    generation = FakeGeneration(["ok"])
    transport = FakeTransport()
    task = await start(transport, services(generation))
    transport.client({"realtimeInput": {"text": "hi"}})
    await transport.wait_for(has("turnComplete"))
    transport.inbound.put_nowait(None)
    await task
    assert len(generation.state_keys) == 1
    assert generation.forgotten == list(generation.state_keys)  # not resumable: freed


class FakeGrant:
    """An ephemeral token's grant: locks the temperature, expires soon, counts admissions."""

    def __init__(self, expires_in_s: float) -> None:
        self.key_hash = "creator"
        self.expire_time = datetime.now(UTC) + timedelta(seconds=expires_in_s)
        self.admitted: list[bool] = []

    def constrain(self, setup: Setup) -> Setup:
        config = (setup.generation_config or LiveGenerationConfig()).model_copy(
            update={"temperature": 0.25}
        )
        return setup.model_copy(update={"generation_config": config})

    async def admit(self, *, resuming: bool) -> None:
        self.admitted.append(resuming)


async def test_a_token_session_obeys_its_grant_and_ends_when_the_token_expires() -> None:
    generation = FakeGeneration(["ok"])
    transport = FakeTransport()
    grant = FakeGrant(expires_in_s=0.8)
    live = services(generation, goaway_notice_s=0.5)
    session = LiveSession(transport, live, key_hash="ignored", grant=grant)
    task = asyncio.create_task(serve_session(session))
    transport.client({"setup": {"model": "models/m", "generationConfig": {"temperature": 1.5}}})
    transport.client({"realtimeInput": {"text": "hi"}})
    await transport.wait_for(has("turnComplete"))
    config = generation.requests[0].generation_config
    assert config is not None and config.temperature == 0.25  # the token's value, not the client's
    assert grant.admitted == [False] and session.key_hash == "creator"
    async with asyncio.timeout(5):
        await task
    assert any("goAway" in m for m in transport.sent)
    assert transport.closed is not None and transport.closed[0] == 1008
    assert "expired" in transport.closed[1]


# --- the camera ---------------------------------------------------------------------------


class FakeVision:
    """Says which sign it sees; counts its looks."""

    def __init__(self) -> None:
        self.looks = 0
        self.sizes: list[tuple[int, int]] = []

    def observe(self, image: bytes, mime_type: str, *, max_side: int | None = None) -> Observation:
        return self.observe_image(decode_image(image, mime_type))

    def observe_image(self, image: Image.Image) -> Observation:
        self.looks += 1
        self.sizes.append(image.size)
        return Observation(f"a sign coloured {image.getpixel((0, 0))}")


def frame(
    colour: tuple[int, int, int], mark: bool = False, size: tuple[int, int] = (320, 240)
) -> dict[str, Any]:
    image = Image.new("RGB", size, colour)
    if mark:  # a different picture: a block in one half
        Image.Image.paste(image, (255, 255, 255), (0, 0, 160, 240))
    out = io.BytesIO()
    image.save(out, "JPEG")
    data = base64.b64encode(out.getvalue()).decode()
    return {"realtimeInput": {"video": {"mimeType": "image/jpeg", "data": data}}}


async def test_what_the_camera_shows_joins_the_next_user_turn_once() -> None:
    generation = FakeGeneration(["ok"])
    live = services(generation)
    live.vision = vision = FakeVision()
    transport = FakeTransport()
    task = await start(transport, live)
    transport.client(frame((200, 30, 30)))
    async with asyncio.timeout(5):
        while vision.looks < 1:
            await asyncio.sleep(0.01)
    transport.client(frame((200, 30, 30)))  # the same scene: not looked at again
    transport.client({"realtimeInput": {"text": "what do you see?"}})
    done = await transport.wait_for(has("turnComplete"))
    # The view is billed as one image; the engine's 7-token prompt less the view's text is TEXT.
    billed = {d["modality"]: d["tokenCount"] for d in done["usageMetadata"]["promptTokensDetails"]}
    assert billed["IMAGE"] == 258 and 0 <= billed["TEXT"] < 7
    assert done["usageMetadata"]["promptTokenCount"] == sum(billed.values())
    user = generation.requests[-1].contents[-1]
    assert user.parts[0].text is not None and user.parts[0].text.startswith("[camera: a sign")
    assert user.parts[1].text == "what do you see?"
    transport.client({"realtimeInput": {"text": "and now?"}})
    async with asyncio.timeout(5):
        while len(generation.requests) < 2 or generation.finished < 2:
            await asyncio.sleep(0.01)
    assert [p.text for p in generation.requests[-1].contents[-1].parts] == ["and now?"]
    transport.client(frame((30, 30, 200), mark=True))  # a new scene is looked at
    async with asyncio.timeout(5):
        while vision.looks < 2:
            await asyncio.sleep(0.01)
    assert vision.looks == 2
    transport.inbound.put_nowait(None)
    await task


async def test_media_resolution_sets_what_a_view_counts_as_and_the_size_looked_at() -> None:
    generation = FakeGeneration(["ok"])
    live = services(generation)
    live.vision = vision = FakeVision()
    transport = FakeTransport()
    task = await start(
        transport, live, generationConfig={"mediaResolution": "MEDIA_RESOLUTION_LOW"}
    )
    transport.client(frame((200, 30, 30), size=(1280, 960)))
    async with asyncio.timeout(5):
        while vision.looks < 1:
            await asyncio.sleep(0.01)
    transport.client({"realtimeInput": {"text": "what do you see?"}})
    done = await transport.wait_for(has("turnComplete"))
    billed = {d["modality"]: d["tokenCount"] for d in done["usageMetadata"]["promptTokensDetails"]}
    assert billed["IMAGE"] == 64
    assert vision.sizes == [(384, 288)]
    transport.inbound.put_nowait(None)
    await task


async def test_a_corrupt_frame_closes_with_1007() -> None:
    live = services(FakeGeneration(["ok"]))
    live.vision = FakeVision()
    transport = FakeTransport()
    task = await start(transport, live)
    data = base64.b64encode(b"\xff\xd8 not a jpeg").decode()
    transport.client({"realtimeInput": {"video": {"mimeType": "image/jpeg", "data": data}}})
    async with asyncio.timeout(5):
        await task
    assert transport.closed is not None and transport.closed[0] == 1007
    assert "frame" in transport.closed[1]


async def test_a_cancelled_send_stays_cancelled_when_the_outbox_frees_at_that_moment() -> None:
    """The 1011 seen under load: the session's task group cancelled a task whose wait for outbox
    room ended in the same loop step; the cancellation was lost, the task went on and spawned
    into the closing group ("TaskGroup is shutting down"), and the session closed with 1011."""
    session = LiveSession(FakeTransport(), services(FakeGeneration([]), outbox_size=1))
    session.outbox.put_nowait(chunk("queued"))  # type: ignore[arg-type]
    after: list[str] = []

    async def send_then_go_on() -> None:
        await session.emit(chunk("next"))  # type: ignore[arg-type]
        after.append("went on")

    task = asyncio.create_task(send_then_go_on())
    await asyncio.sleep(0)  # it now waits for room in the outbox
    session.outbox.get_nowait()  # room frees: the put completes on the next loop step ...
    task.cancel()  # ... and in that same step the group cancels the task
    await asyncio.wait([task])
    assert task.cancelled()
    assert after == []


async def test_work_spawned_while_the_session_closes_never_ends_it_with_1011() -> None:
    """A task that is still running as the group closes (one that was being woken up as it
    was cancelled) must not turn the session's ending into an internal error."""
    transport = FakeTransport()
    session = LiveSession(transport, services(FakeGeneration([]), outbox_size=1))

    async def run() -> None:
        async with asyncio.TaskGroup() as tg:
            session.tg = tg
            session.outbox.put_nowait(chunk("queued"))  # type: ignore[arg-type]

            async def sender() -> None:
                await session.emit(chunk("next"))  # type: ignore[arg-type]
                session.spawn(asyncio.sleep(0))

            async def failing() -> None:
                await asyncio.sleep(0.01)
                session.outbox.get_nowait()
                raise NotFound("the session ends")

            tg.create_task(sender())
            tg.create_task(failing())

    try:
        await run()
    except* NotFound:
        pass  # the one failure the group must report: nothing else may join it


# --- bad input: a reason and a 1007 / 1008, never a 1011 ------------------------------------------


async def test_a_connection_that_sends_no_setup_is_closed_with_a_reason() -> None:
    transport = FakeTransport()
    session = LiveSession(transport, services(FakeGeneration([]), setup_timeout_s=0.1))
    async with asyncio.timeout(5):
        await serve_session(session)
    assert transport.closed == (1008, "no setup arrived within 0.1 s")


async def test_audio_rates_in_other_digits_close_1007_not_1011() -> None:
    data = base64.b64encode(b"\0\0" * 160).decode()
    for rate in ("\u00b9\u2076\u2070\u2070\u2070", "\u0661\u0666\u0660\u0660\u0660", "1" * 5000):
        transport = FakeTransport()
        task = await start(transport, services(FakeGeneration([])))
        mime = "audio/pcm;rate=" + rate
        transport.client({"realtimeInput": {"audio": {"mimeType": mime, "data": data}}})
        async with asyncio.timeout(5):
            await task
        assert transport.closed is not None and transport.closed[0] == 1007, transport.closed
        assert "sample rate" in transport.closed[1]


async def test_bad_json_in_frames_closes_1007_and_in_the_setup_1008() -> None:
    for frame, code in [
        ('{"realtimeInput": {"text": "\\ud800"}}', 1007),
        ("[" * 10_000 + "]" * 10_000, 1007),
        ('{"realtimeInput": {"text": "x", "n": 1' + "0" * 40 + "}}", 1007),
    ]:
        transport = FakeTransport()
        task = await start(transport, services(FakeGeneration([])))
        transport.inbound.put_nowait(frame)
        async with asyncio.timeout(5):
            await task
        assert transport.closed is not None and transport.closed[0] == code, transport.closed
    transport = FakeTransport()
    session = LiveSession(transport, services(FakeGeneration([])))
    transport.inbound.put_nowait('{"setup": {"model": "models/m\\udc00"}}')
    await serve_session(session)
    assert transport.closed is not None and transport.closed[0] == 1008
    assert "surrogate" in transport.closed[1]


class SlowCountingEngine(WordCountingEngine):
    """Tokenizing a long text blocks its thread, as llama.cpp's tokenizer does."""

    def count_tokens(self, text: str) -> int:
        if len(text) > 10_000:
            time.sleep(0.5)
        return super().count_tokens(text)


async def test_a_long_text_frame_is_counted_off_the_event_loop() -> None:
    generation = FakeGeneration(["ok"])
    live = services(generation)
    live.models.engine = SlowCountingEngine(context_size=10_000_000)  # type: ignore[attr-defined]
    transport = FakeTransport()
    task = await start(transport, live)
    await transport.wait_for(lambda m: "setupComplete" in m)
    gaps: list[float] = []
    stop = asyncio.Event()

    async def ticker() -> None:
        last = time.perf_counter()
        while not stop.is_set():
            await asyncio.sleep(0.01)
            gaps.append(time.perf_counter() - last)
            last = time.perf_counter()

    ticking = asyncio.create_task(ticker())
    long_text = "word " * 200_000  # 1 MB
    transport.client({"clientContent": {"turns": [{"parts": [{"text": long_text}]}]}})
    transport.client({"realtimeInput": {"text": long_text + " and a question?"}})
    await transport.wait_for(has("turnComplete"))
    stop.set()
    await ticking
    transport.inbound.put_nowait(None)
    await task
    assert max(gaps) < 0.25, f"the event loop stalled for {max(gaps):.2f} s"
    assert session_tokens(generation) > 400_000  # both long texts were counted, not skipped


def session_tokens(generation: FakeGeneration) -> int:
    return sum(
        len((p.text or "").split()) for c in generation.requests[-1].contents for p in c.parts
    )


class FakeSynthesizer:
    """A tenth of a second of quiet per word."""

    name = "fake"

    def __init__(self) -> None:
        self.spoken: list[str] = []

    async def synthesize(self, client: str, text: str) -> bytes:
        self.spoken.append(text)
        return b"\x01\x00" * 2400 * len(text.split())

    def close(self) -> None:
        pass


async def test_spoken_pieces_join_into_the_answer_as_it_was_said() -> None:
    transport = FakeTransport()
    generation = FakeGeneration(
        ["The capital of", " France is **Paris**.", " It lies on", " the Seine."]
    )
    live = services(generation)
    synthesizer = FakeSynthesizer()
    live.perception.tts.value = synthesizer  # type: ignore[assignment]
    task = await start(
        transport,
        live,
        generationConfig={"responseModalities": ["AUDIO"]},
        outputAudioTranscription={},
    )
    transport.client({"realtimeInput": {"text": "Where is Paris?"}})
    await transport.wait_for(has("turnComplete"))
    pieces = [
        m["serverContent"]["outputTranscription"]["text"]
        for m in transport.sent
        if "outputTranscription" in m.get("serverContent", {})
    ]
    assert len(pieces) >= 2  # spoken clause by clause
    assert "".join(pieces) == "The capital of France is Paris. It lies on the Seine."
    assert " ".join(synthesizer.spoken) == "".join(pieces)  # the transcript is what was said
    transport.inbound.put_nowait(None)
    await task


async def test_an_initial_history_is_kept_and_not_answered() -> None:
    transport, generation = FakeTransport(), FakeGeneration(["Ada."])
    task = await start(
        transport, services(generation), historyConfig={"initialHistoryInClientContent": True}
    )
    turns = [
        {"role": "user", "parts": [{"text": "My name is Ada."}]},
        {"role": "model", "parts": [{"text": "Hello Ada."}]},
    ]
    transport.client({"clientContent": {"turns": turns[:1]}})
    transport.client({"clientContent": {"turns": turns[1:], "turnComplete": True}})
    transport.client({"realtimeInput": {"text": "What is my name?"}})
    await transport.wait_for(has("turnComplete"))
    assert len(generation.requests) == 1  # the history itself was not answered
    asked = generation.requests[0].contents
    assert [(c.role, c.parts[0].text) for c in asked] == [
        ("user", "My name is Ada."),
        ("model", "Hello Ada."),
        ("user", "What is my name?"),
    ]
    transport.inbound.put_nowait(None)
    await task


async def test_realtime_input_before_the_initial_history_closes_1008() -> None:
    transport = FakeTransport()
    session = LiveSession(transport, services(FakeGeneration([])))
    transport.client(
        {"setup": {"model": "models/m", "historyConfig": {"initialHistoryInClientContent": True}}}
    )
    transport.client({"realtimeInput": {"text": "hi"}})
    await serve_session(session)
    assert transport.closed is not None and transport.closed[0] == 1008
    assert "initialHistoryInClientContent" in transport.closed[1]


async def test_with_turn_coverage_only_activity_frames_count_while_the_user_is_active() -> None:
    live = services(FakeGeneration(["ok"]))
    live.vision = vision = FakeVision()
    transport = FakeTransport()
    session = LiveSession(transport, live)
    task = asyncio.create_task(serve_session(session))
    config = {
        "automaticActivityDetection": {"disabled": True},
        "turnCoverage": "TURN_INCLUDES_ONLY_ACTIVITY",
    }
    transport.client({"setup": {"model": "models/m", "realtimeInputConfig": config}})
    transport.client(frame((200, 30, 30), size=(640, 480)))  # nobody speaks: not in a turn
    transport.client({"realtimeInput": {"activityStart": {}}})
    async with asyncio.timeout(5):
        while not session.core.in_activity:
            await asyncio.sleep(0.01)
    assert vision.looks == 0
    transport.client(frame((30, 30, 200)))
    async with asyncio.timeout(5):
        while vision.looks < 1:
            await asyncio.sleep(0.01)
    await asyncio.sleep(0.1)
    assert vision.sizes == [(320, 240)]  # the frame sent during the activity only
    transport.inbound.put_nowait(None)
    await task
