"""The Live session driver against scripted parts: no sockets, no models.

The real models and the official SDK are exercised in tests/integration/test_live.py; here the
generator, the speech models and the socket are doubles, so the session's policies (slow readers,
barge-in, disconnects, message order) can be pinned down exactly.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator
from typing import Any

import numpy as np

from flashlive.api.live import serve_session
from flashlive.errors import NotFound
from flashlive.ledger.records import UsageRecord
from flashlive.live.driver import LiveSession
from flashlive.live.services import LiveLimits, LiveServices, Perception
from flashlive.perception.asr import Transcript
from flashlive.protocol.content import Content, Part, Role
from flashlive.protocol.generate import (
    Candidate,
    GenerateContentRequest,
    GenerateContentResponse,
    UsageMetadata,
)


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


class FakeModels:
    async def get(self, model: str) -> object:
        if model != "m":
            raise NotFound(f"models/{model} is not found")
        return object()


class FakeGeneration:
    """Streams `pieces` with a delay between them; remembers requests and cancellations."""

    def __init__(self, pieces: list[str], delay: float = 0.0) -> None:
        self.pieces = pieces
        self.delay = delay
        self.requests: list[GenerateContentRequest] = []
        self.warmed: list[GenerateContentRequest] = []
        self.cancelled = 0
        self.finished = 0

    async def warm(
        self, model: str, request: GenerateContentRequest, resolve_cache: object = None
    ) -> bool:
        self.warmed.append(request)
        return True

    async def stream(
        self, model: str, request: GenerateContentRequest, resolve_cache: object = None
    ) -> AsyncIterator[GenerateContentResponse]:
        self.requests.append(request)
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
