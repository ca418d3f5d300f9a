"""Images → observations: decoding, refusals, the OCR stage and the seen-image cache."""

from __future__ import annotations

import base64
import io
from pathlib import Path
from typing import Any

import pytest
from media import encoded
from media import sign as board
from PIL import Image

from flashlive.errors import InvalidArgument
from flashlive.perception.vision import (
    EmbeddedVision,
    NativeVision,
    TesseractOcr,
    _likely,
    decode_image,
)


def sign(text: str, fmt: str = "PNG") -> bytes:
    return encoded(board(text, (640, 240), font_size=72), fmt)


@pytest.mark.parametrize(
    ("fmt", "mime"),
    [("PNG", "image/png"), ("JPEG", "image/jpeg"), ("WEBP", "image/webp"), ("HEIF", "image/heic")],
)
def test_every_accepted_format_decodes_to_rgb(fmt: str, mime: str) -> None:
    if fmt == "HEIF":
        from pillow_heif import register_heif_opener

        register_heif_opener()  # lets Pillow write the HEIC this test reads back
    image = decode_image(sign("hi", fmt), mime)
    assert image.mode == "RGB" and image.size == (640, 240)


@pytest.mark.parametrize(
    ("data", "mime", "complaint"),
    [
        (b"not an image at all", "image/png", "not a readable image"),
        (sign("hi")[:200], "image/png", "not a readable image"),
        (sign("hi"), "image/gif", "not an image type"),
    ],
)
def test_unreadable_images_are_invalid_arguments(data: bytes, mime: str, complaint: str) -> None:
    with pytest.raises(InvalidArgument, match=complaint):
        decode_image(data, mime)


def test_a_huge_image_is_refused_before_it_is_decoded() -> None:
    out = io.BytesIO()
    Image.new("1", (10_000, 6_000)).save(out, "PNG")  # 60 megapixels, a small file
    with pytest.raises(InvalidArgument, match="pixels"):
        decode_image(out.getvalue(), "image/png")


@pytest.fixture(scope="module")
def vision(tmp_path_factory: pytest.TempPathFactory) -> EmbeddedVision:
    if TesseractOcr.find() is None:
        pytest.fail("tesseract is not installed: run scripts/system-deps.sh")
    return EmbeddedVision.load(tmp_path_factory.mktemp("models"))


def test_the_text_in_an_image_is_read_and_every_stage_runs(vision: EmbeddedVision) -> None:
    seen = vision.observe(sign("STOP HERE"), "image/png")
    assert "STOP HERE" in seen.text
    assert set(seen.seconds) == {"decode", "ocr", "bodies", "labels"}


def test_a_confident_label_is_named() -> None:
    vision = EmbeddedVision(
        [("labels", lambda image: _likely([("espresso", 0.93), ("cup", 0.04)]))]
    )
    assert vision.observe(sign("x"), "image/png").text == "likely: espresso (0.93)"
    unsure = EmbeddedVision([("labels", lambda image: _likely([("kite", 0.1)]))])
    assert "nothing recognised" in unsure.observe(sign("y"), "image/png").text


def test_an_image_without_text_says_so(vision: EmbeddedVision) -> None:
    out = io.BytesIO()
    Image.new("RGB", (320, 200), (90, 140, 200)).save(out, "PNG")
    assert "nothing recognised" in vision.observe(out.getvalue(), "image/png").text


def test_an_image_seen_before_is_not_looked_at_again() -> None:
    calls: list[tuple[int, int]] = []

    def stage(image: Image.Image) -> str:
        calls.append(image.size)
        return "a stage ran"

    vision = EmbeddedVision([("probe", stage)])
    first = vision.observe(sign("A"), "image/png")
    again = vision.observe(sign("A"), "image/png")
    other = vision.observe(sign("B"), "image/png")
    assert first is again and first.text == "a stage ran" and other is not first
    assert len(calls) == 2


class FakeChatModel:
    """Stands in for a multimodal llama.cpp model: records what it was shown."""

    def __init__(self, reply: str) -> None:
        self.reply = reply
        self.shown: list[Image.Image] = []

    def create_chat_completion(
        self, *, messages: Any, max_tokens: int, temperature: float
    ) -> dict[str, Any]:
        content = messages[0]["content"]
        url = next(c["image_url"]["url"] for c in content if c["type"] == "image_url")
        header, data = url.split(",", 1)
        assert header == "data:image/png;base64"
        self.shown.append(Image.open(io.BytesIO(base64.b64decode(data))).convert("RGB"))
        assert any(c["type"] == "text" for c in content) and max_tokens > 0
        return {"choices": [{"message": {"role": "assistant", "content": self.reply}}]}


def test_a_multimodal_model_is_shown_the_image_and_its_words_are_the_observation() -> None:
    model = FakeChatModel("  A red sign that says\n'STOP HERE'. ")
    vision = NativeVision(model)
    data = sign("STOP HERE", "JPEG")
    seen = vision.observe(data, "image/jpeg")
    assert seen.text == "A red sign that says 'STOP HERE'."
    assert model.shown[0].size == (640, 240)
    assert vision.observe(data, "image/jpeg") is seen and len(model.shown) == 1  # seen before
    with pytest.raises(InvalidArgument):
        vision.observe(b"broken", "image/png")
    assert len(model.shown) == 1  # an unreadable image never reaches the model


def test_a_missing_vision_model_file_is_reported(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        NativeVision.load(tmp_path / "model.gguf", tmp_path / "mmproj.gguf")


def test_a_vision_model_needs_its_projector(tmp_path: Path) -> None:
    from flashlive.api.server import load_vision
    from flashlive.config import Settings
    from flashlive.errors import FailedStart

    with pytest.raises(FailedStart, match="go together"):
        load_vision(Settings(vision_model=tmp_path / "model.gguf"))


def test_a_picture_looked_at_smaller_shows_less(vision: EmbeddedVision) -> None:
    """mediaResolution LOW looks at 384 pixels a side: small print is no longer read."""
    small_print = encoded(board("OPEN AT NINE", (1600, 600), font_size=24), "PNG")
    assert "OPEN AT NINE" in vision.observe(small_print, "image/png").text
    assert "OPEN AT NINE" not in vision.observe(small_print, "image/png", max_side=384).text
