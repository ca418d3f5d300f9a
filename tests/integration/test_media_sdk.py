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
from media import encoded, video
from media import sign as board
from speech import spoken
from test_live import sdk_client, send_speech, text_of, transcript, turn

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def client(server: Server) -> genai.Client:
    return genai.Client(api_key="any", http_options=types.HttpOptions(base_url=server.base_url))


def sign(text: str) -> bytes:
    return encoded(board(text, (640, 240), font_size=72), "JPEG")


def billed(response: types.GenerateContentResponse) -> dict[types.MediaModality | None, int]:
    """Prompt tokens by modality; they must add up to the prompt count."""
    usage = response.usage_metadata
    assert usage is not None
    details = {d.modality: d.token_count or 0 for d in usage.prompt_tokens_details or []}
    assert usage.prompt_token_count == sum(details.values())
    return details


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
    details = billed(response)
    assert details[types.MediaModality.IMAGE] == 258 and details[types.MediaModality.TEXT]


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
    details = billed(answered)
    assert counted.total_tokens == sum(details.values())
    assert details[types.MediaModality.IMAGE] == 2 * 258


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
    details = billed(response)
    assert details[types.MediaModality.AUDIO] == math.ceil(len(pcm) / 2 / 16000 * 32)
    counted = client.models.count_tokens(model=INSTRUCT_MODEL, contents=contents)
    assert counted.total_tokens == sum(details.values())


async def test_a_live_session_reads_the_sign_its_camera_shows_when_asked_aloud(
    server: Server, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    question = spoken("What does the sign say?", tmp_path)
    client = sdk_client(server, monkeypatch)
    config = types.LiveConnectConfig(
        response_modalities=["TEXT"],
        max_output_tokens=16,
        temperature=0.0,
        input_audio_transcription=types.AudioTranscriptionConfig(),
    )
    async with client.aio.live.connect(model=INSTRUCT_MODEL, config=config) as session:

        async def camera() -> None:  # a frame a second, as a phone camera sends them
            while True:
                frame = types.Blob(data=sign("GATE 7"), mime_type="image/jpeg")
                await session.send_realtime_input(video=frame)
                await asyncio.sleep(1.0)

        frames = asyncio.create_task(camera())
        try:
            await asyncio.sleep(1.5)
            speaking = asyncio.create_task(send_speech(session, question))
            messages = await turn(session)
            await speaking
        finally:
            frames.cancel()
    assert "sign" in transcript(messages, "input_transcription").lower()
    assert "GATE 7" in text_of(messages).upper()


def test_a_video_is_watched_in_time_order_and_billed_as_video(client: genai.Client) -> None:
    clip = video(["RED", "GREEN", "BLUE"])
    contents = [
        types.Part.from_bytes(data=clip, mime_type="video/mp4"),
        "List the words shown in the video, in the order they appear, separated by commas.",
    ]
    response = client.models.generate_content(
        model=INSTRUCT_MODEL,
        contents=contents,
        config=types.GenerateContentConfig(max_output_tokens=16, temperature=0.0),
    )
    answer = (response.text or "").upper()
    assert 0 <= answer.find("RED") < answer.find("GREEN") < answer.find("BLUE"), answer
    details = billed(response)
    assert 3 * 263 <= details[types.MediaModality.VIDEO] <= math.ceil(3.2 * 263)
    assert 3 * 32 <= details[types.MediaModality.AUDIO] <= math.ceil(3.2 * 32)  # the sound track
    counted = client.models.count_tokens(model=INSTRUCT_MODEL, contents=contents)
    assert counted.total_tokens == sum(details.values())


def test_video_metadata_clips_the_video_and_media_resolution_sets_its_cost(
    client: genai.Client,
) -> None:
    clip = types.Part(
        inline_data=types.Blob(data=video(["RED", "GREEN", "BLUE"]), mime_type="video/mp4"),
        video_metadata=types.VideoMetadata(start_offset="1s", end_offset="2s", fps=2),
    )
    contents = [clip, "Which word does the video show? Answer with the word only."]
    response = client.models.generate_content(
        model=INSTRUCT_MODEL,
        contents=contents,
        config=types.GenerateContentConfig(max_output_tokens=8, temperature=0.0),
    )
    answer = (response.text or "").upper()
    assert "GREEN" in answer and "RED" not in answer and "BLUE" not in answer, answer
    details = billed(response)
    assert details[types.MediaModality.VIDEO] == 2 * 263  # one second at two frames a second
    assert details[types.MediaModality.AUDIO] == 32
    low = client.models.generate_content(
        model=INSTRUCT_MODEL,
        contents=[types.Part.from_bytes(data=sign("EXIT"), mime_type="image/jpeg"), "Read it."],
        config=types.GenerateContentConfig(
            max_output_tokens=1, media_resolution=types.MediaResolution.MEDIA_RESOLUTION_LOW
        ),
    )
    assert billed(low)[types.MediaModality.IMAGE] == 64


@pytest.mark.parametrize(
    ("data", "mime", "complaint"),
    [
        (b"\xff\xd8 broken", "image/jpeg", "not a readable image"),
        (b"ID3 not mp3" * 9, "audio/mpeg", "not readable audio"),
        (b"\x00\x00\x00\x18ftyp?", "video/mp4", "not a readable video"),
    ],
)
def test_unreadable_media_is_a_400_naming_the_part(
    client: genai.Client, data: bytes, mime: str, complaint: str
) -> None:
    with pytest.raises(errors.ClientError) as failure:
        client.models.generate_content(
            model=FAST_MODEL, contents=["Look:", types.Part.from_bytes(data=data, mime_type=mime)]
        )
    assert failure.value.code == 400 and complaint in str(failure.value)
    assert "contents[0].parts[1].inlineData" in str(failure.value)


def test_a_part_of_another_kind_is_refused_clearly(client: genai.Client) -> None:
    with pytest.raises(errors.ClientError) as failure:
        client.models.generate_content(
            model=FAST_MODEL,
            contents=[
                "Read:",
                types.Part.from_bytes(data=b"%PDF-1.4", mime_type="application/pdf"),
            ],
        )
    assert failure.value.code == 400 and "application/pdf" in str(failure.value)
