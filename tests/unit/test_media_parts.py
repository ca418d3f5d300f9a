"""mediaResolution and videoMetadata: what media counts as, how large it is looked at, which
part of a video is watched and at what rate. The vision stage and the engine are doubles here;
tests/integration/test_media_sdk.py runs the real ones."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from media import encoded, sign, video
from PIL import Image
from scripted import MODEL, FakeEngine, service_over

from flashlive.errors import InvalidArgument
from flashlive.generation.resolution import Resolution, resolution_of
from flashlive.generation.service import GenerationService, MediaTokens
from flashlive.perception.video import decode_video
from flashlive.perception.vision import Observation, SeenImages, decode_image, fit
from flashlive.protocol.content import MediaResolution, PartMediaResolution
from flashlive.protocol.generate import CountTokensRequest, GenerateContentRequest

LOW, MEDIUM, HIGH = MediaResolution.LOW, MediaResolution.MEDIUM, MediaResolution.HIGH


@pytest.mark.parametrize(
    ("level", "part", "expected"),
    [
        (None, None, Resolution()),
        (HIGH, None, Resolution()),
        (LOW, None, Resolution(64, 384)),
        (MEDIUM, None, Resolution(256, 768)),
        (LOW, PartMediaResolution(level=HIGH), Resolution()),  # the part's own wins
        (HIGH, PartMediaResolution(level=LOW), Resolution(64, 384)),
        (LOW, PartMediaResolution(num_tokens=100), Resolution(100, 480)),
    ],
)
def test_a_part_is_seen_at_its_own_resolution_else_the_requests(
    level: MediaResolution | None, part: PartMediaResolution | None, expected: Resolution
) -> None:
    assert resolution_of(level, part) == expected


def test_fit_shrinks_to_the_longer_side_and_keeps_the_shape() -> None:
    image = Image.new("RGB", (1600, 800))
    assert fit(image, 384).size == (384, 192)
    assert fit(image, None) is image
    assert fit(image, 4000) is image


def test_an_image_is_remembered_per_size_it_was_looked_at() -> None:
    looked: list[tuple[int, int]] = []

    def look(image: Image.Image) -> Observation:
        looked.append(image.size)
        return Observation("seen")

    seen, data = SeenImages(), encoded(Image.new("RGB", (1000, 500)))
    for side in (None, 384, 384, None):
        seen.observe(data, "image/png", look, side)
    assert looked == [(1000, 500), (384, 192)]


class SizeVision:
    """Remembers the size of every picture it is given."""

    def __init__(self) -> None:
        self.sizes: list[tuple[int, int]] = []

    def observe(self, image: bytes, mime_type: str, *, max_side: int | None = None) -> Observation:
        return self.observe_image(fit(decode_image(image, mime_type), max_side))

    def observe_image(self, image: Image.Image) -> Observation:
        self.sizes.append(image.size)
        return Observation(f"look {len(self.sizes)}")


async def heard(samples: np.ndarray) -> str:
    return f"{samples.size / 16000:.1f} s of tone"


def perceiving(tmp_path: Path) -> tuple[GenerationService, SizeVision]:
    vision = SizeVision()
    service = service_over(
        tmp_path, FakeEngine([]), vision=vision, transcribe=heard, media_tokens=MediaTokens()
    )
    return service, vision


def inline(data: bytes, mime: str, **part: Any) -> dict[str, Any]:
    return {"inlineData": {"mimeType": mime, "data": base64.b64encode(data).decode()}, **part}


async def counted(
    service: GenerationService, *parts: dict[str, Any], **config: Any
) -> dict[str, int]:
    body = {"contents": [{"parts": [*parts, {"text": "What is shown?"}]}]}
    if config:
        body["generationConfig"] = config
    request = CountTokensRequest(
        generate_content_request=GenerateContentRequest.model_validate(body)
    )
    response = await service.count_tokens(MODEL, request)
    return {str(d.modality): d.token_count for d in response.prompt_tokens_details or []}


async def test_media_resolution_sets_an_images_tokens_and_the_size_looked_at(
    tmp_path: Path,
) -> None:
    service, vision = perceiving(tmp_path)
    picture = encoded(Image.new("RGB", (1600, 1200), (200, 30, 30)))
    assert (await counted(service, inline(picture, "image/png")))["IMAGE"] == 258
    low = await counted(
        service, inline(picture, "image/png"), mediaResolution="MEDIA_RESOLUTION_LOW"
    )
    assert low["IMAGE"] == 64
    own = await counted(
        service,
        inline(picture, "image/png", mediaResolution={"numTokens": 100}),
        inline(picture, "image/png", mediaResolution={"level": "MEDIA_RESOLUTION_MEDIUM"}),
        mediaResolution="MEDIA_RESOLUTION_LOW",
    )
    assert own["IMAGE"] == 100 + 256
    assert vision.sizes == [(1600, 1200), (384, 288), (480, 360), (768, 576)]


async def test_video_metadata_cuts_the_clip_and_sets_its_frame_rate(tmp_path: Path) -> None:
    service, vision = perceiving(tmp_path)
    clip = video(["ONE", "TWO", "THREE"])
    meta = {"startOffset": "1s", "endOffset": "2.5s", "fps": 2}
    tokens = await counted(service, inline(clip, "video/mp4", videoMetadata=meta))
    # Frames at 1, 1.5 and 2 s: TWO, TWO again (the same scene, not looked at twice), THREE.
    assert len(vision.sizes) == 2
    assert tokens["VIDEO"] == round(1.5 * 2 * 263)  # each frame counts as a second at 1 fps
    assert tokens["AUDIO"] == round(1.5 * 32)  # the sound of the clip only
    low = await counted(
        service,
        inline(clip, "video/mp4", videoMetadata=meta),
        mediaResolution="MEDIA_RESOLUTION_LOW",
    )
    assert low["VIDEO"] == round(1.5 * 2 * 64)


@pytest.mark.parametrize(
    ("layers", "watched", "listened"),
    [(["FRAMES"], True, False), (["AUDIO"], False, True), (["TRANSCRIPT", "FRAMES"], True, True)],
)
async def test_content_layers_choose_what_is_watched_and_heard(
    tmp_path: Path, layers: list[str], watched: bool, listened: bool
) -> None:
    service, vision = perceiving(tmp_path)
    part = inline(video(["A", "B", "C"]), "video/mp4", videoMetadata={"contentLayers": layers})
    tokens = await counted(service, part)
    # Three seconds of clip, and a little more: the encoded streams run past it.
    assert (3 * 263 <= tokens.get("VIDEO", 0) <= 3.2 * 263) is watched
    assert (3 * 32 <= tokens.get("AUDIO", 0) <= 3.2 * 32) is listened
    assert len(vision.sizes) == (3 if watched else 0)


async def test_video_metadata_on_a_picture_is_refused(tmp_path: Path) -> None:
    service, _ = perceiving(tmp_path)
    picture = inline(encoded(sign("X")), "image/png", videoMetadata={"fps": 2})
    with pytest.raises(InvalidArgument, match=r"contents\[0\].parts\[0\].videoMetadata"):
        await counted(service, picture)


def test_a_clip_starts_at_its_offset_and_counts_time_from_there() -> None:
    clip = decode_video(
        video(["ONE", "TWO", "THREE"]), "video/mp4", fps=1, max_seconds=60, start=1.0, end=3.0
    )
    assert [round(at, 2) for at, _ in clip.frames] == [0.0, 1.0]
    assert clip.seconds == pytest.approx(2.0, abs=0.05)
    assert clip.audio is not None and clip.audio.size == pytest.approx(2 * 16000, abs=400)


@pytest.mark.parametrize(
    ("meta", "complaint"),
    [({"fps": 30}, "fps"), ({"startOffset": "2s", "endOffset": "1s"}, "after startOffset")],
)
def test_bad_video_metadata_is_a_400(meta: dict[str, Any], complaint: str) -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match=complaint):
        GenerateContentRequest.model_validate(
            {"contents": [{"parts": [inline(b"x", "video/mp4", videoMetadata=meta)]}]}
        )
