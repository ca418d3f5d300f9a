"""The faces / hands / pose stage, on drawn images: real MediaPipe models, no files."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from media import encoded, sign
from PIL import Image, ImageDraw, ImageFilter

from flashlive.perception.bodies import BodyDetector
from flashlive.perception.vision import EmbeddedVision


def drawn_face() -> Image.Image:
    """A cartoon face (skin oval, hair, eyes, brows, nose, mouth): MediaPipe scores it about 0.8."""
    image = Image.new("RGB", (640, 480), (200, 200, 200))
    draw = ImageDraw.Draw(image)
    draw.ellipse((210, 90, 430, 390), fill=(190, 150, 120))
    draw.chord((205, 60, 435, 180), 180, 360, fill=(40, 30, 20))
    for x in (275, 365):
        draw.ellipse((x - 22, 198, x + 22, 222), fill="white")
        draw.ellipse((x - 9, 201, x + 9, 219), fill=(40, 30, 20))
        draw.line((x - 25, 185, x + 25, 182), fill=(40, 30, 20), width=5)
    draw.line((320, 220, 310, 280), fill=(150, 110, 90), width=4)
    draw.chord((280, 295, 360, 325), 0, 180, fill=(150, 50, 50))
    return image.filter(ImageFilter.GaussianBlur(1.5))


def noise() -> Image.Image:
    pixels = np.random.default_rng(0).integers(0, 256, (480, 640, 3), dtype=np.uint8)
    return Image.fromarray(pixels)


@pytest.fixture(scope="module")
def bodies() -> Iterator[BodyDetector]:
    if importlib.util.find_spec("mediapipe") is None:
        pytest.fail("mediapipe is not installed: run scripts/install.sh")
    detector = BodyDetector.load()
    yield detector
    detector.close()


def test_a_drawn_face_is_one_face(bodies: BodyDetector) -> None:
    assert bodies.describe(drawn_face()) == "faces: 1"


@pytest.mark.parametrize(
    "image",
    [Image.new("RGB", (640, 480), (90, 140, 200)), noise(), sign("STOP HERE")],
    ids=["plain", "noise", "sign"],
)
def test_nobody_in_plain_noisy_or_text_images(bodies: BodyDetector, image: Image.Image) -> None:
    assert bodies.describe(image) is None


def test_a_large_frame_is_shrunk_and_still_seen(bodies: BodyDetector) -> None:
    assert bodies.describe(drawn_face().resize((2560, 1920))) == "faces: 1"


def test_describe_is_safe_from_several_threads(bodies: BodyDetector) -> None:
    images = [drawn_face(), noise(), drawn_face(), sign("EXIT")] * 3
    expected = [bodies.describe(image) for image in images]
    with ThreadPoolExecutor(4) as pool:
        assert list(pool.map(bodies.describe, images)) == expected


def test_matplotlib_stands_in_only_while_mediapipe_is_imported(bodies: BodyDetector) -> None:
    if importlib.util.find_spec("matplotlib") is None:
        assert "matplotlib" not in sys.modules


def test_a_closed_detector_refuses_to_describe() -> None:
    detector = BodyDetector.load()
    detector.close()
    detector.close()
    with pytest.raises(RuntimeError, match="closed"):
        detector.describe(drawn_face())


def test_embedded_vision_runs_the_bodies_stage(bodies: BodyDetector, tmp_path: Path) -> None:
    vision = EmbeddedVision.load(tmp_path)
    seen = vision.observe(encoded(drawn_face()), "image/png")
    assert "bodies" in seen.seconds
    assert "faces: 1" in seen.text


def test_another_protobuf_is_refused_with_the_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("importlib.metadata.version", lambda name: "7.34.0")
    with pytest.raises(RuntimeError, match=r"needs protobuf 4, not 7\.34\.0"):
        BodyDetector.load()
