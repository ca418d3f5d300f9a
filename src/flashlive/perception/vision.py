"""Images → observations a text-only model can use.

No vision-language model ships its weights on PyPI, so the embedded default looks at an image
through specialised models and writes what they found as one short line of text:

    text: 'STOP HERE'; likely: street sign (0.91)

Stages are independent and each is timed; an image seen before (by content hash) is not looked
at twice. A multimodal engine that takes images natively would sit behind the same `Vision`
interface and return its own observation.
"""

from __future__ import annotations

import hashlib
import io
import logging
import shutil
import subprocess
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from PIL import Image, UnidentifiedImageError

from flashlive.errors import InvalidArgument
from flashlive.perception.labels import Labeler

log = logging.getLogger(__name__)

IMAGE_MIMES = frozenset({"image/png", "image/jpeg", "image/webp", "image/heic", "image/heif"})
MAX_PIXELS = 50_000_000  # larger images are refused before they are decoded in full
OCR_TIMEOUT_S = 20.0
OCR_MAX_SIDE = 2000  # tesseract reads larger images no better and much slower
MAX_TEXT_CHARS = 400  # an observation stays a line, not a page
SEEN_CACHE = 256  # observations kept by image hash
LABEL_MIN_P = 0.25  # ImageNet guesses less sure than this are not worth the model's attention


@dataclass(frozen=True)
class Observation:
    """What was seen in one image, and how long each stage took."""

    text: str
    seconds: dict[str, float] = field(default_factory=dict)


class Vision(Protocol):
    def observe(self, image: bytes, mime_type: str) -> Observation:
        """Look at an encoded image (blocking: callers run it in a worker thread)."""
        ...


def decode_image(data: bytes, mime_type: str) -> Image.Image:
    """The image in `data` as RGB, or InvalidArgument saying why it cannot be read."""
    _register_heif()
    if mime_type not in IMAGE_MIMES:
        raise InvalidArgument(
            f"{mime_type} is not an image type this server reads "
            f"(one of {', '.join(sorted(IMAGE_MIMES))})"
        )
    try:
        image = Image.open(io.BytesIO(data))
        width, height = image.size
        if width * height > MAX_PIXELS:
            raise InvalidArgument(
                f"the {mime_type} image is {width}x{height}: more than {MAX_PIXELS} pixels"
            )
        image.load()
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise InvalidArgument(f"the {mime_type} data is not a readable image: {exc}") from None
    except Image.DecompressionBombError as exc:
        raise InvalidArgument(f"the {mime_type} image is too large: {exc}") from None
    return image.convert("RGB")


_heif_lock = threading.Lock()
_heif_registered = False


def _register_heif() -> None:
    global _heif_registered
    with _heif_lock:
        if _heif_registered:
            return
        try:
            from pillow_heif import register_heif_opener

            register_heif_opener()
        except ImportError:
            log.warning("pillow-heif is missing: image/heic cannot be read")
        _heif_registered = True


def frame_hash(image: Image.Image) -> int:
    """A 64-bit difference hash: frames that look alike to a person differ in few bits, so a
    camera pointed at an unchanged scene is not looked at again (JPEG noise changes bytes)."""
    small = image.convert("L").resize((9, 8), Image.Resampling.BILINEAR)
    pixels = small.tobytes()
    bits = 0
    for row in range(8):
        for col in range(8):
            bits = (bits << 1) | (pixels[row * 9 + col] > pixels[row * 9 + col + 1])
    return bits


def hash_distance(a: int, b: int) -> int:
    return (a ^ b).bit_count()


class TesseractOcr:
    """Reads printed text with the tesseract binary (Debian `tesseract-ocr`)."""

    def __init__(self, binary: str) -> None:
        self._binary = binary

    @classmethod
    def find(cls) -> TesseractOcr | None:
        binary = shutil.which("tesseract")
        return cls(binary) if binary else None

    def read(self, image: Image.Image) -> str:
        if max(image.size) > OCR_MAX_SIDE:
            image = image.copy()
            image.thumbnail((OCR_MAX_SIDE, OCR_MAX_SIDE))
        png = io.BytesIO()
        image.save(png, "PNG")
        done = subprocess.run(
            [self._binary, "stdin", "stdout", "-l", "eng", "--psm", "11"],
            input=png.getvalue(),
            capture_output=True,
            timeout=OCR_TIMEOUT_S,
            check=False,
        )
        if done.returncode != 0:
            log.warning("tesseract failed: %s", done.stderr.decode(errors="replace")[:200])
            return ""
        return " ".join(done.stdout.decode(errors="replace").split())


Stage = Callable[[Image.Image], str | None]  # one kind of looking: a phrase, or nothing found


class EmbeddedVision:
    """The default: each stage contributes a phrase; the phrases joined are the observation."""

    def __init__(self, stages: Sequence[tuple[str, Stage]]) -> None:
        self._stages = list(stages)
        self._seen: OrderedDict[str, Observation] = OrderedDict()
        self._lock = threading.Lock()

    @classmethod
    def load(cls, cache_dir: Path) -> EmbeddedVision:
        """Blocking (the labeller is assembled on first use): call it from a worker thread."""
        stages: list[tuple[str, Stage]] = []
        ocr = TesseractOcr.find()
        if ocr is not None:
            stages.append(("ocr", lambda image: _quoted_text(ocr.read(image))))
        else:
            log.warning("tesseract is not installed: images are described without their text")
        try:
            labeler = Labeler.load(cache_dir)
        except Exception as exc:  # a missing or damaged weights package: labels are optional
            log.warning("image labels are off: %s", exc)
        else:
            stages.append(("labels", lambda image: _likely(labeler.top(image, k=2))))
        return cls(stages)

    def observe(self, image: bytes, mime_type: str) -> Observation:
        key = hashlib.sha256(image).hexdigest()
        with self._lock:
            seen = self._seen.get(key)
            if seen is not None:
                self._seen.move_to_end(key)
                return seen
        began = time.perf_counter()
        decoded = decode_image(image, mime_type)
        seconds = {"decode": time.perf_counter() - began}
        phrases: list[str] = []
        for name, stage in self._stages:
            began = time.perf_counter()
            phrase = stage(decoded)
            seconds[name] = time.perf_counter() - began
            if phrase:
                phrases.append(phrase)
        width, height = decoded.size
        observation = Observation(
            "; ".join(phrases) if phrases else f"a {width}x{height} image; nothing recognised",
            seconds,
        )
        with self._lock:
            self._seen[key] = observation
            while len(self._seen) > SEEN_CACHE:
                self._seen.popitem(last=False)
        return observation


def _likely(labels: list[tuple[str, float]]) -> str | None:
    sure = [f"{name} ({p:.2f})" for name, p in labels if p >= LABEL_MIN_P]
    return "likely: " + ", ".join(sure) if sure else None


def _quoted_text(text: str) -> str | None:
    if not text:
        return None
    if len(text) > MAX_TEXT_CHARS:
        text = text[:MAX_TEXT_CHARS].rsplit(" ", 1)[0] + " …"
    return f"text: '{text}'"
