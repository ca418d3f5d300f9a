"""Video files → frames over time and a sound track; frames → scenes in time order."""

from __future__ import annotations

import pytest
from media import sign, video
from PIL import Image

from flashlive.errors import InvalidArgument
from flashlive.generation.media import scenes, spans
from flashlive.perception.video import decode_video
from flashlive.perception.vision import Observation


@pytest.mark.parametrize("kind", ["mp4", "webm"])
def test_frames_are_sampled_once_a_second_with_the_sound(kind: str) -> None:
    clip = decode_video(
        video(["ONE", "TWO", "THREE"], kind=kind), f"video/{kind}", fps=1, max_seconds=60
    )
    assert [round(at, 2) for at, _ in clip.frames] == [0.0, 1.0, 2.0]
    assert 2.9 <= clip.seconds <= 3.2
    assert clip.audio is not None and 2.9 <= clip.audio.size / 16000 <= 3.2


def test_a_silent_video_has_no_sound_track() -> None:
    assert decode_video(video(["A"], sound=False), "video/mp4", fps=2, max_seconds=60).audio is None


@pytest.mark.parametrize(
    ("data", "mime", "limit", "complaint"),
    [
        (b"\x00\x00\x00\x18ftypmp42 broken", "video/mp4", 60, "not a readable video"),
        (video(["A"]), "video/avi", 60, "not a video type"),
        (video(["A", "B", "C"]), "video/mp4", 1.5, "longer than"),
    ],
)
def test_unreadable_or_too_long_videos_are_invalid(
    data: bytes, mime: str, limit: float, complaint: str
) -> None:
    with pytest.raises(InvalidArgument, match=complaint):
        decode_video(data, mime, fps=1, max_seconds=limit)


class WordVision:
    """'Sees' a frame by its top-left pixel; counts looks."""

    def __init__(self) -> None:
        self.looks = 0

    def observe(self, image: bytes, mime_type: str, *, max_side: int | None = None) -> Observation:
        raise AssertionError("video frames are looked at decoded")

    def observe_image(self, image: Image.Image) -> Observation:
        self.looks += 1
        return Observation(f"look {self.looks}")


def test_scenes_keep_time_order_and_skip_repeated_frames() -> None:
    frames = [(0.0, sign("ONE")), (1.0, sign("ONE")), (2.0, sign("TWO")), (3.0, sign("TWO"))]
    vision = WordVision()
    seen = scenes(vision, frames)
    assert vision.looks == 2  # the repeated frames were not looked at
    assert spans(seen, 4.0) == [(0.0, 2.0, "look 1"), (2.0, 4.0, "look 2")]
