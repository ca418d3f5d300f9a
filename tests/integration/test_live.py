"""The Live API through the official Python SDK (over WSS) and raw WebSockets, on real models."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import websockets
from conftest import FAST_MODEL, INSTRUCT_MODEL, Server, start_server, stop_server
from google import genai
from google.genai import types
from speech import char_error_rate, chunks, rms, silence, spoken, word_error_rate, words

from flashlive.tls import ca_path

pytestmark = pytest.mark.timeout(300)

WS_PATH = "/ws/google.ai.generativelanguage.v1beta.GenerativeService.BidiGenerateContent"
CHUNK_MS = 100


@pytest.fixture(scope="module")
def instruct_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = start_server(tmp_path_factory.mktemp("live-instruct"), model=INSTRUCT_MODEL)
    yield srv
    stop_server(srv)


def sdk_client(server: Server, monkeypatch: pytest.MonkeyPatch) -> genai.Client:
    # The SDK always speaks wss:// with an API key; it trusts CAs named by SSL_CERT_FILE.
    monkeypatch.setenv("SSL_CERT_FILE", str(ca_path(server.data_dir)))
    return genai.Client(api_key="test-key", http_options=types.HttpOptions(base_url=server.tls_url))


async def send_speech(session: Any, pcm: bytes, *, tail_s: float = 1.2) -> float:
    """Stream speech then silence at real-time pace; return when the speech part ended."""
    start = time.monotonic()
    sent = 0.0
    spoken_until = 0.0
    for part, is_speech in ((pcm, True), (silence(tail_s), False)):
        for chunk in chunks(part, CHUNK_MS):
            await session.send_realtime_input(
                audio=types.Blob(data=chunk, mime_type="audio/pcm;rate=16000")
            )
            sent += len(chunk) / 2 / 16000
            await asyncio.sleep(max(0.0, start + sent - time.monotonic()))
        if is_speech:
            spoken_until = time.monotonic()
    return spoken_until


async def turn(session: Any) -> list[types.LiveServerMessage]:
    return [message async for message in session.receive()]


def text_of(messages: list[types.LiveServerMessage]) -> str:
    return "".join(m.text or "" for m in messages)


def transcript(messages: list[types.LiveServerMessage], kind: str) -> str:
    pieces = []
    for m in messages:
        content = m.server_content
        found = getattr(content, kind, None) if content else None
        if found is not None and found.text:
            pieces.append(found.text)
    # Output pieces carry their own leading space, as Gemini's do; input ones are whole turns.
    return ("" if kind == "output_transcription" else " ").join(pieces)


def audio_of(messages: list[types.LiveServerMessage]) -> tuple[bytes, set[str]]:
    pcm, mimes = b"", set()
    for m in messages:
        turn_ = m.server_content.model_turn if m.server_content else None
        for part in turn_.parts or [] if turn_ else []:
            if part.inline_data is not None and part.inline_data.data:
                pcm += part.inline_data.data
                mimes.add(part.inline_data.mime_type or "")
    return pcm, mimes


async def test_text_turn_through_the_sdk(server: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    client = sdk_client(server, monkeypatch)
    config = types.LiveConnectConfig(response_modalities=["TEXT"], max_output_tokens=24)
    async with client.aio.live.connect(model=FAST_MODEL, config=config) as session:
        await session.send_client_content(
            turns=types.Content(
                role="user", parts=[types.Part(text="What is the capital of France?")]
            ),
            turn_complete=True,
        )
        messages = await turn(session)
        assert "Paris" in text_of(messages)
        assert messages[-1].server_content and messages[-1].server_content.turn_complete
        assert any(m.server_content and m.server_content.generation_complete for m in messages)
        usage = messages[-1].usage_metadata
        assert usage is not None and usage.prompt_token_count and usage.response_token_count
        assert usage.total_token_count == usage.prompt_token_count + usage.response_token_count

        # The session remembers: a second turn sees the first.
        await session.send_realtime_input(text="And of Italy?")
        second = await turn(session)
        assert second[-1].server_content and second[-1].server_content.turn_complete
        assert second[-1].usage_metadata.prompt_token_count > usage.prompt_token_count


async def test_spoken_question_is_transcribed_and_answered(
    server: Server, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    sentence = "What is the capital of France?"
    pcm = spoken(sentence, tmp_path)
    client = sdk_client(server, monkeypatch)
    config = types.LiveConnectConfig(
        response_modalities=["TEXT"],
        input_audio_transcription=types.AudioTranscriptionConfig(),
        max_output_tokens=24,
    )
    async with client.aio.live.connect(model=FAST_MODEL, config=config) as session:
        sender = asyncio.create_task(send_speech(session, pcm))
        messages = await turn(session)
        await sender
    heard = transcript(messages, "input_transcription")
    assert word_error_rate(sentence, heard) <= 0.2, heard
    assert text_of(messages).strip()
    assert messages[-1].server_content and messages[-1].server_content.turn_complete


async def test_spoken_answer_is_24khz_speech_matching_its_transcript(
    instruct_server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flashlive.perception.asr import Transcriber
    from flashlive.perception.audio import resample

    client = sdk_client(instruct_server, monkeypatch)
    config = types.LiveConnectConfig(
        response_modalities=["AUDIO"],
        output_audio_transcription=types.AudioTranscriptionConfig(),
        max_output_tokens=40,
    )
    async with client.aio.live.connect(model=INSTRUCT_MODEL, config=config) as session:
        await session.send_client_content(
            turns=types.Content(
                role="user", parts=[types.Part(text="Describe an apple in one sentence.")]
            ),
            turn_complete=True,
        )
        messages = await turn(session)
    pcm, mimes = audio_of(messages)
    assert mimes == {"audio/pcm;rate=24000"}
    assert len(pcm) > 2 * 24000 * 0.3 and rms(pcm) > 0.01
    said = transcript(messages, "output_transcription")
    assert len(words(said)) >= 3, said  # a sentence: one word is too little to compare
    samples = np.frombuffer(pcm, dtype="<i2").astype(np.float32) / 32768.0
    transcriber = Transcriber.load()
    try:
        heard = await transcriber.transcribe("test", resample(samples, 24000, 16000))
    finally:
        transcriber.close()
    # Letters, not words: ASR may split one sound differently ("a round" / "around").
    assert char_error_rate(said, heard.text) <= 0.2, (said, heard.text)


async def test_speaking_over_a_long_answer_interrupts_it(
    instruct_server: Server, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    pcm = spoken("Stop, please stop talking now.", tmp_path)
    client = sdk_client(instruct_server, monkeypatch)
    config = types.LiveConnectConfig(response_modalities=["AUDIO"], max_output_tokens=300)
    async with client.aio.live.connect(model=INSTRUCT_MODEL, config=config) as session:
        await session.send_client_content(
            turns=types.Content(
                role="user",
                parts=[types.Part(text="Tell me a long story about a dragon, in ten sentences.")],
            ),
            turn_complete=True,
        )
        seen: list[types.LiveServerMessage] = []
        sender: asyncio.Task[float] | None = None
        async with asyncio.timeout(120):
            while not any(m.server_content and m.server_content.interrupted for m in seen):
                async for message in session.receive():  # one turn per pass
                    seen.append(message)
                    if sender is None and audio_of([message])[0]:
                        sender = asyncio.create_task(send_speech(session, pcm, tail_s=0.3))
                    if message.server_content and message.server_content.interrupted:
                        break
        assert sender is not None
        await sender
    stopped = [m for m in seen if m.server_content and m.server_content.interrupted]
    assert len(stopped) == 1
    # Nothing of the interrupted answer follows the interruption.
    after = seen[seen.index(stopped[0]) + 1 :]
    assert not audio_of(after)[0]


async def manual_turn(
    server: Server, monkeypatch: pytest.MonkeyPatch, pcm: bytes, rate: int, max_tokens: int
) -> list[types.LiveServerMessage]:
    """One turn with automatic detection off: the client marks where speech starts and ends."""
    client = sdk_client(server, monkeypatch)
    config = types.LiveConnectConfig(
        response_modalities=["TEXT"],
        input_audio_transcription=types.AudioTranscriptionConfig(),
        realtime_input_config=types.RealtimeInputConfig(
            automatic_activity_detection=types.AutomaticActivityDetection(disabled=True)
        ),
        max_output_tokens=max_tokens,
    )
    async with client.aio.live.connect(model=FAST_MODEL, config=config) as session:
        await session.send_realtime_input(activity_start=types.ActivityStart())
        for chunk in chunks(pcm, CHUNK_MS, rate=rate):  # no pacing, no trailing silence
            await session.send_realtime_input(
                audio=types.Blob(data=chunk, mime_type=f"audio/pcm;rate={rate}")
            )
        await session.send_realtime_input(activity_end=types.ActivityEnd())
        return await turn(session)


async def test_manual_activity_signals(
    server: Server, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    sentence = "Please name three colors."
    messages = await manual_turn(server, monkeypatch, spoken(sentence, tmp_path), 16000, 24)
    assert word_error_rate(sentence, transcript(messages, "input_transcription")) <= 0.2
    assert messages[-1].server_content and messages[-1].server_content.turn_complete


async def test_audio_at_another_rate_is_resampled(
    server: Server, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    sentence = "The weather is sunny today."
    pcm = spoken(sentence, tmp_path, rate=48000)
    messages = await manual_turn(server, monkeypatch, pcm, 48000, 8)
    assert word_error_rate(sentence, transcript(messages, "input_transcription")) <= 0.2


async def test_tool_call_round_trip(
    instruct_server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    weather = types.FunctionDeclaration(
        name="get_weather",
        description="Current weather in a city",
        parameters=types.Schema(
            type=types.Type.OBJECT,
            properties={"city": types.Schema(type=types.Type.STRING)},
            required=["city"],
        ),
    )
    client = sdk_client(instruct_server, monkeypatch)
    config = types.LiveConnectConfig(
        response_modalities=["TEXT"],
        tools=[types.Tool(function_declarations=[weather])],
        max_output_tokens=64,
        temperature=0,
    )
    async with client.aio.live.connect(model=INSTRUCT_MODEL, config=config) as session:
        await session.send_client_content(
            turns=types.Content(
                role="user", parts=[types.Part(text="What is the weather in Paris right now?")]
            ),
            turn_complete=True,
        )
        call = None
        async for message in session.receive():
            if message.tool_call:
                call = message.tool_call.function_calls[0]
                break
        assert call is not None and call.name == "get_weather" and call.id
        assert "paris" in json.dumps(call.args).lower()
        await session.send_tool_response(
            function_responses=[
                types.FunctionResponse(
                    id=call.id, name=call.name, response={"forecast": "rainy, 12 degrees"}
                )
            ]
        )
        messages = await turn(session)
    answer = text_of(messages).lower()
    assert "rain" in answer or "12" in answer, answer


async def test_ten_concurrent_sessions_all_complete(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = sdk_client(server, monkeypatch)
    config = types.LiveConnectConfig(response_modalities=["TEXT"], max_output_tokens=12)

    async def one(i: int) -> list[types.LiveServerMessage]:
        async with client.aio.live.connect(model=FAST_MODEL, config=config) as session:
            await session.send_realtime_input(text=f"Count from {i} to {i + 3}.")
            return await turn(session)

    results = await asyncio.gather(*(one(i) for i in range(10)))
    for messages in results:
        assert messages[-1].server_content and messages[-1].server_content.turn_complete
        assert messages[-1].usage_metadata and messages[-1].usage_metadata.response_token_count


# --- malformed input: raw WebSockets on the plain HTTP port ------------------------------------


def ws_url(server: Server) -> str:
    return f"ws://127.0.0.1:{server.port}{WS_PATH}"


SETUP = json.dumps({"setup": {"model": f"models/{FAST_MODEL}"}})
PCM_MESSAGE = {"realtimeInput": {"audio": {"mimeType": "audio/pcm;rate=16000", "data": "AAAA"}}}


def audio_message(**blob: str) -> str:
    return json.dumps(
        {"realtimeInput": {"audio": {**PCM_MESSAGE["realtimeInput"]["audio"], **blob}}}
    )


async def closed_with(server: Server, frames: list[str | bytes]) -> tuple[int, str]:
    async with websockets.connect(ws_url(server), max_size=None) as ws:
        for frame in frames:
            await ws.send(frame)
        try:
            async with asyncio.timeout(30):
                while True:
                    await ws.recv()
        except websockets.ConnectionClosed as closed:
            assert closed.rcvd is not None
            return closed.rcvd.code, closed.rcvd.reason
    raise AssertionError("the server did not close the session")


@pytest.mark.parametrize(
    ("frames", "code", "reason"),
    [
        (
            [json.dumps({"clientContent": {"turnComplete": True}})],
            1008,
            "first message must be setup",
        ),
        (["not json"], 1008, "invalid setup"),
        ([json.dumps({"setup": {"model": "models/no-such-model"}})], 1008, "no-such-model"),
        ([json.dumps({"setup": {"model": "models/x", "bogus": 1}})], 1008, "bogus"),
        ([SETUP, SETUP], 1008, "setup may be sent only once"),
        ([SETUP, "{not json"], 1007, "Invalid JSON"),
        ([SETUP, audio_message(data="@@not base64@@")], 1007, "base64"),
        ([SETUP, audio_message(mimeType="audio/wav")], 1007, "audio/wav"),
        ([SETUP, audio_message(mimeType="audio/pcm;rate=1000")], 1007, "1000"),
        ([SETUP, audio_message(data="AA==")], 1007, "even number"),
        ([SETUP, json.dumps({"realtimeInput": {}})], 1007, "nothing"),
        ([SETUP, json.dumps({"realtimeInput": {"activityStart": {}}})], 1008, "disabled"),
        (
            [
                SETUP,
                json.dumps({"toolResponse": {"functionResponses": [{"id": "x", "name": "f"}]}}),
            ],
            1007,
            "does not answer",
        ),
        ([SETUP, "x" * (5 * 1024 * 1024)], 1009, "limit"),
        (
            [
                json.dumps(
                    {"setup": {"model": "models/x", "generationConfig": {"translationConfig": {}}}}
                )
            ],
            1008,
            "generationConfig.translationConfig is not supported",
        ),
        (
            [
                SETUP,
                json.dumps(
                    {"clientContent": {"turns": [{"parts": [{"fileData": {"fileUri": "gs://a"}}]}]}}
                ),
            ],
            1007,
            "fileData is not supported",
        ),
    ],
)
async def test_malformed_input_closes_with_a_reason(
    server: Server, frames: list[str | bytes], code: int, reason: str
) -> None:
    got_code, got_reason = await closed_with(server, frames)
    assert (got_code, reason.lower() in got_reason.lower()) == (code, True), got_reason


async def test_a_bad_session_does_not_disturb_a_good_one(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = sdk_client(server, monkeypatch)
    config = types.LiveConnectConfig(response_modalities=["TEXT"], max_output_tokens=16)
    async with client.aio.live.connect(model=FAST_MODEL, config=config) as session:
        await session.send_realtime_input(text="Say hello.")
        bad = await asyncio.gather(*(closed_with(server, [SETUP, "{oops"]) for _ in range(5)))
        assert all(code == 1007 for code, _ in bad)
        messages = await turn(session)
    assert messages[-1].server_content and messages[-1].server_content.turn_complete


async def test_wrong_key_is_refused(tmp_path: Path) -> None:
    srv = start_server(tmp_path, env={"FLASHLIVE_API_KEYS": "right"})
    try:
        async with websockets.connect(ws_url(srv) + "?key=wrong") as ws:
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await ws.recv()
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008
        async with websockets.connect(
            ws_url(srv), additional_headers={"x-goog-api-key": "right"}
        ) as ws:
            await ws.send(SETUP)
            reply = json.loads(await ws.recv())
        assert "setupComplete" in reply
    finally:
        stop_server(srv)


async def frames_until_closed(ws: Any) -> AsyncIterator[str | bytes]:
    try:
        while True:
            yield await ws.recv()
    except websockets.ConnectionClosed:
        return


async def test_raw_wire_shapes(server: Server) -> None:
    async with websockets.connect(ws_url(server)) as ws:
        await ws.send(SETUP)
        first = json.loads(await ws.recv())
        assert set(first) == {"setupComplete"}
        await ws.send(json.dumps({"realtimeInput": {"text": "Say hi."}}))
        kinds: list[str] = []
        async for raw in frames_until_closed(ws):
            message = json.loads(raw)
            kinds.extend(message.get("serverContent", {}))
            if message.get("serverContent", {}).get("turnComplete"):
                assert message["usageMetadata"]["totalTokenCount"] > 0
                break
    assert kinds[0] == "modelTurn" and kinds[-1] == "turnComplete"
    assert "generationComplete" in kinds


def generations_running(server: Server) -> float:
    metrics = httpx.get(f"{server.base_url}/metrics", timeout=5).text
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        if line.startswith(("flashlive_generations_active{", "flashlive_generations_queued{"))
    )


async def test_a_disconnect_stops_the_answer_at_once(server: Server) -> None:
    setup = {
        "setup": {"model": f"models/{FAST_MODEL}", "generationConfig": {"maxOutputTokens": 2000}}
    }
    async with websockets.connect(ws_url(server)) as ws:
        await ws.send(json.dumps(setup))
        await ws.recv()
        await ws.send(
            json.dumps({"realtimeInput": {"text": "Write a very long essay about rivers."}})
        )
        first = json.loads(await ws.recv())
        assert "modelTurn" in first["serverContent"]
        assert generations_running(server) >= 1
    # Closed mid-answer: the engine is free again well before 2000 tokens could be written.
    deadline = time.monotonic() + 3.0
    while generations_running(server) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert generations_running(server) == 0


@pytest.mark.parametrize("holding", ["contents", "systemInstruction"])
async def test_a_live_session_can_start_from_a_cached_content(server: Server, holding: str) -> None:
    notes = " ".join(
        f"Note {i}: the locker code of room {i} is {1000 + 37 * i}." for i in range(25)
    )
    facts = notes + " The secret password of the blue door is marmalade."
    held: dict[str, Any] = {"parts": [{"text": facts}]}
    created = httpx.post(
        f"{server.base_url}/v1beta/cachedContents",
        json={
            "model": f"models/{FAST_MODEL}",
            holding: [{"role": "user", **held}] if holding == "contents" else held,
            "ttl": "120s",
        },
        timeout=60,
    )
    assert created.status_code == 200, created.text
    name = created.json()["name"]
    setup = {"setup": {"model": f"models/{FAST_MODEL}", "cachedContent": name}}
    async with websockets.connect(ws_url(server)) as ws:
        await ws.send(json.dumps(setup))
        assert "setupComplete" in json.loads(await ws.recv())
        question = "What is the password of the blue door?"
        await ws.send(json.dumps({"realtimeInput": {"text": question}}))
        text, done = "", {}
        async for raw in frames_until_closed(ws):
            message = json.loads(raw)
            for part in message.get("serverContent", {}).get("modelTurn", {}).get("parts", []):
                text += part.get("text", "")
            if message.get("serverContent", {}).get("turnComplete"):
                done = message
                break
    assert text.strip()
    live_usage = done["usageMetadata"]
    assert live_usage["cachedContentTokenCount"] > 0
    # The turn saw exactly what generateContent sees with the same cache and question.
    rest = httpx.post(
        f"{server.base_url}/v1beta/models/{FAST_MODEL}:generateContent",
        json={"cachedContent": name, "contents": [{"role": "user", "parts": [{"text": question}]}]},
        timeout=60,
    ).json()["usageMetadata"]
    assert live_usage["promptTokenCount"] == rest["promptTokenCount"]
    assert live_usage["cachedContentTokenCount"] == rest["cachedContentTokenCount"]
    # A cache of another key, or none at all, is refused at setup.
    missing = {"setup": {"model": f"models/{FAST_MODEL}", "cachedContent": "cachedContents/0"}}
    code, reason = await closed_with(server, [json.dumps(missing)])
    assert code == 1008 and "cachedContents/0" in reason
