"""Images and audio in REST through the official SDK: seen and heard by the embedded perception
stages, billed by modality."""

from __future__ import annotations

import asyncio
import io
import math
import wave
from pathlib import Path

import httpx
import pytest
from conftest import FAST_MODEL, INSTRUCT_MODEL, Server
from google import genai
from google.genai import errors, types
from PIL import Image, ImageDraw, ImageFont
from speech import spoken
from test_live import sdk_client, text_of, turn

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def client(server: Server) -> genai.Client:
    return genai.Client(api_key="any", http_options=types.HttpOptions(base_url=server.base_url))


def sign(text: str) -> bytes:
    image = Image.new("RGB", (640, 240), (190, 20, 20))
    ImageDraw.Draw(image).text((40, 70), text, fill="white", font=ImageFont.load_default(size=72))
    out = io.BytesIO()
    image.save(out, "JPEG")
    return out.getvalue()


def test_the_model_reads_the_text_of_an_image(client: genai.Client) -> None:
    response = client.models.generate_content(
        model=INSTRUCT_MODEL,
        contents=[
            types.Part.from_bytes(data=sign("BRIDGE CLOSED"), mime_type="image/jpeg"),
            "What does the sign in this image say? Answer with its words only.",
        ],
        config=types.GenerateContentConfig(max_output_tokens=16, temperature=0.0),
    )
    assert "BRIDGE CLOSED" in (response.text or "").upper()
    usage = response.usage_metadata
    assert usage is not None and usage.prompt_tokens_details is not None
    details = {d.modality: d.token_count for d in usage.prompt_tokens_details}
    assert details[types.MediaModality.IMAGE] == 258
    assert details[types.MediaModality.TEXT] and usage.prompt_token_count == sum(details.values())


def test_count_tokens_agrees_with_generate_content(client: genai.Client) -> None:
    contents = [
        types.Part.from_bytes(data=sign("EXIT"), mime_type="image/jpeg"),
        types.Part.from_bytes(data=sign("ENTRY"), mime_type="image/jpeg"),
        "Which words do you see?",
    ]
    counted = client.models.count_tokens(model=FAST_MODEL, contents=contents)
    answered = client.models.generate_content(
        model=FAST_MODEL, contents=contents, config=types.GenerateContentConfig(max_output_tokens=2)
    )
    assert answered.usage_metadata is not None
    assert counted.total_tokens == answered.usage_metadata.prompt_token_count
    listed = answered.usage_metadata.prompt_tokens_details or []
    details = {d.modality: d.token_count for d in listed}
    assert details[types.MediaModality.IMAGE] == 2 * 258


def test_a_corrupt_image_is_a_400(client: genai.Client) -> None:
    with pytest.raises(errors.ClientError) as failure:
        client.models.generate_content(
            model=FAST_MODEL,
            contents=[types.Part.from_bytes(data=b"\xff\xd8 broken", mime_type="image/jpeg"), "hi"],
        )
    assert failure.value.code == 400 and "not a readable image" in str(failure.value)


def test_a_50_mb_image_is_a_413(server: Server) -> None:
    body = b'{"contents":[{"parts":[{"inlineData":{"mimeType":"image/png","data":"'
    body += b"A" * (50 * 1024 * 1024) + b'"}}]}]}'
    response = httpx.post(
        f"{server.base_url}/v1beta/models/{FAST_MODEL}:generateContent",
        content=body,
        headers={"content-type": "application/json"},
        timeout=60,
    )
    assert response.status_code == 413
    assert response.json()["error"]["code"] == 413


def wav_of(pcm: bytes) -> bytes:
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(pcm)
    return out.getvalue()


def test_an_audio_part_is_heard_and_billed_as_audio(client: genai.Client, tmp_path: Path) -> None:
    question = "What is the capital of France?"
    pcm = spoken(question, tmp_path)
    contents = [
        types.Part.from_bytes(data=wav_of(pcm), mime_type="audio/wav"),
        "Answer the question in the recording in one word.",
    ]
    response = client.models.generate_content(
        model=INSTRUCT_MODEL,
        contents=contents,
        config=types.GenerateContentConfig(max_output_tokens=8, temperature=0.0),
    )
    assert "paris" in (response.text or "").lower()
    usage = response.usage_metadata
    assert usage is not None
    details = {d.modality: d.token_count for d in usage.prompt_tokens_details or []}
    assert details[types.MediaModality.AUDIO] == math.ceil(len(pcm) / 2 / 16000 * 32)
    counted = client.models.count_tokens(model=INSTRUCT_MODEL, contents=contents)
    assert counted.total_tokens == usage.prompt_token_count == sum(details.values())


def test_unreadable_audio_is_a_400(client: genai.Client) -> None:
    with pytest.raises(errors.ClientError) as failure:
        client.models.generate_content(
            model=FAST_MODEL,
            contents=[types.Part.from_bytes(data=b"ID3 not mp3" * 9, mime_type="audio/mpeg"), "?"],
        )
    assert failure.value.code == 400 and "not readable audio" in str(failure.value)


async def test_a_live_session_reads_the_sign_its_camera_shows(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = sdk_client(server, monkeypatch)
    config = types.LiveConnectConfig(
        response_modalities=["TEXT"], max_output_tokens=16, temperature=0.0
    )
    async with client.aio.live.connect(model=INSTRUCT_MODEL, config=config) as session:
        for _ in range(3):  # a camera sends a frame a second; the scene does not change
            await session.send_realtime_input(
                video=types.Blob(data=sign("GATE 7"), mime_type="image/jpeg")
            )
            await asyncio.sleep(1.0)
        await session.send_realtime_input(text="What does the sign say? Only its words.")
        messages = await turn(session)
    assert "GATE 7" in text_of(messages).upper()
