"""Images → observations a text-only model can use.

No vision-language model ships its weights on PyPI, so the embedded default looks at an image
through specialised models and writes what they found as one short line of text:

    text: 'STOP HERE'; likely: street sign (0.91)

Stages are independent and each is timed; an image seen before (by content hash) is not looked
at twice. A multimodal engine that takes images natively would sit behind the same `Vision`
interface and return its own observation.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import io
import logging
import os
import shutil
import subprocess
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from PIL import Image, UnidentifiedImageError

from flashlive.engine.worker import run_on_worker
from flashlive.errors import InvalidArgument
from flashlive.perception.bodies import BodyDetector
from flashlive.perception.labels import Labeler

log = logging.getLogger(__name__)

IMAGE_MIMES = frozenset({"image/png", "image/jpeg", "image/webp", "image/heic", "image/heif"})
MAX_PIXELS = 50_000_000  # larger images are refused before they are decoded in full
OCR_TIMEOUT_S = 20.0
# Tesseract's automatic page layout: "sparse text" (11) read nothing on signs against a
# textured wall or inside a border, where this read 5 of 6 (benchmarks/vision.py's signs).
PAGE_SEGMENTATION = "3"
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
    def observe(self, image: bytes, mime_type: str, *, max_side: int | None = None) -> Observation:
        """Look at an encoded image, shrunk first to fit `max_side` pixels when that is given
        (blocking: callers run it in a worker thread)."""
        ...

    def observe_image(self, image: Image.Image) -> Observation:
        """Look at a decoded RGB image, a video frame say (blocking, as `observe`)."""
        ...


def fit(image: Image.Image, max_side: int | None) -> Image.Image:
    """`image` shrunk (aspect kept) so its longer side is at most `max_side`; None: as it is."""
    if max_side is None or max(image.size) <= max_side:
        return image
    scale = max_side / max(image.size)
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    return image.resize(size, Image.Resampling.LANCZOS)


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


def frame_signature(image: Image.Image) -> bytes:
    """A 32x24 grey thumbnail: enough to tell whether a frame shows something new.

    Each cell averages hundreds of pixels, so camera and JPEG noise mostly cancel out, while a
    changed word on a sign still moves some cells a long way.
    """
    return image.convert("L").resize(SIGNATURE_SIZE, Image.Resampling.BOX).tobytes()


SIGNATURE_SIZE = (32, 24)
SAME_SCENE_MAX_STEP = 24  # no cell moved more than this (of 255): the same scene to a person


def same_scene(a: bytes, b: bytes) -> bool:
    if len(a) != len(b):
        return False
    step = np.abs(np.frombuffer(a, np.uint8).astype(np.int16) - np.frombuffer(b, np.uint8))
    return int(step.max()) <= SAME_SCENE_MAX_STEP


class SceneWatch:
    """Tells a frame showing something new from the scene last looked at (see `same_scene`);
    measured against that scene, not the previous frame, so a slow drift still counts."""

    def __init__(self) -> None:
        self._last: bytes | None = None

    def is_new(self, image: Image.Image) -> bool:
        shape = frame_signature(image)
        if self._last is not None and same_scene(shape, self._last):
            return False
        self._last = shape
        return True


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
            [self._binary, "stdin", "stdout", "-l", "eng", "--psm", PAGE_SEGMENTATION],
            input=png.getvalue(),
            capture_output=True,
            timeout=OCR_TIMEOUT_S,
            check=False,
            # One thread: OCR shares two cores with speech recognition and the language model.
            env={**os.environ, "OMP_THREAD_LIMIT": "1"},
        )
        if done.returncode != 0:
            log.warning("tesseract failed: %s", done.stderr.decode(errors="replace")[:200])
            return ""
        return " ".join(done.stdout.decode(errors="replace").split())


class SeenImages:
    """Observations of pictures seen before, by content hash: the same bytes are looked at once."""

    def __init__(self, size: int = SEEN_CACHE) -> None:
        self._size = size
        self._seen: OrderedDict[str, Observation] = OrderedDict()
        self._lock = threading.Lock()

    def observe(
        self,
        image: bytes,
        mime_type: str,
        look: Callable[[Image.Image], Observation],
        max_side: int | None = None,
    ) -> Observation:
        """The observation of `image` at `max_side`: remembered, or decoded (InvalidArgument if
        it cannot be), shrunk to fit and given to `look`."""
        key = f"{hashlib.sha256(image).hexdigest()}:{max_side}"
        with self._lock:
            seen = self._seen.get(key)
            if seen is not None:
                self._seen.move_to_end(key)
                return seen
        began = time.perf_counter()
        decoded = fit(decode_image(image, mime_type), max_side)
        decode_s = time.perf_counter() - began
        fresh = look(decoded)
        observation = replace(fresh, seconds={"decode": decode_s, **fresh.seconds})
        with self._lock:
            self._seen[key] = observation
            while len(self._seen) > self._size:
                self._seen.popitem(last=False)
        return observation


Stage = Callable[[Image.Image], str | None]  # one kind of looking: a phrase, or nothing found


class EmbeddedVision:
    """The default: each stage contributes a phrase; the phrases joined are the observation."""

    def __init__(self, stages: Sequence[tuple[str, Stage]]) -> None:
        self._stages = list(stages)
        self._seen = SeenImages()

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
            bodies = BodyDetector.load()
        except Exception as exc:  # mediapipe missing or on another protobuf: bodies are optional
            log.warning("faces, hands and pose are off: %s", exc)
        else:
            stages.append(("bodies", bodies.describe))
        try:
            labeler = Labeler.load(cache_dir)
        except Exception as exc:  # a missing or damaged weights package: labels are optional
            log.warning("image labels are off: %s", exc)
        else:
            stages.append(("labels", lambda image: _likely(labeler.top(image, k=2))))
        return cls(stages)

    def observe(self, image: bytes, mime_type: str, *, max_side: int | None = None) -> Observation:
        return self._seen.observe(image, mime_type, self.observe_image, max_side)

    def observe_image(self, image: Image.Image) -> Observation:
        seconds: dict[str, float] = {}
        phrases: list[str] = []
        for name, stage in self._stages:
            began = time.perf_counter()
            phrase = stage(image)
            seconds[name] = time.perf_counter() - began
            if phrase:
                phrases.append(phrase)
        width, height = image.size
        return Observation(
            "; ".join(phrases) if phrases else f"a {width}x{height} image; nothing recognised",
            seconds,
        )


def _likely(labels: list[tuple[str, float]]) -> str | None:
    sure = [f"{name} ({p:.2f})" for name, p in labels if p >= LABEL_MIN_P]
    return "likely: " + ", ".join(sure) if sure else None


def _quoted_text(text: str) -> str | None:
    if not text:
        return None
    if len(text) > MAX_TEXT_CHARS:
        text = text[:MAX_TEXT_CHARS].rsplit(" ", 1)[0] + " …"
    return f"text: '{text}'"


DESCRIBE_PROMPT = (
    "Describe this image in one or two short sentences for someone who cannot see it. "
    "Quote any text in it exactly."
)
DESCRIBE_MAX_TOKENS = 96


class ChatModel(Protocol):
    """The slice of llama-cpp-python's `Llama` a multimodal describer needs."""

    def create_chat_completion(
        self, *, messages: Any, max_tokens: int, temperature: float
    ) -> Any: ...


class NativeVision:
    """A multimodal GGUF (model + `mmproj` projector) looks at the image itself, through
    llama.cpp, and says what it sees; the language model gets that text as the observation."""

    def __init__(self, model: ChatModel, worker: ThreadPoolExecutor | None = None) -> None:
        self._model = model
        # The text engine's worker (by default the process's one): an image is described
        # between generations, not beside one, and one image at a time.
        self._worker = worker
        self._seen = SeenImages()

    @classmethod
    def load(
        cls,
        model_path: Path,
        mmproj_path: Path,
        *,
        threads: int | None = None,
        worker: ThreadPoolExecutor | None = None,
    ) -> NativeVision:
        """Blocking: loads the model and its projector (seconds)."""
        from llama_cpp import Llama
        from llama_cpp.llama_chat_format import MTMDChatHandler

        from flashlive.engine.backends import load as load_cpu_backend

        load_cpu_backend()

        for path in (model_path, mmproj_path):
            if not path.is_file():
                raise FileNotFoundError(f"{path} does not exist")
        handler = MTMDChatHandler(clip_model_path=str(mmproj_path), verbose=False, use_gpu=False)
        model = Llama(
            model_path=str(model_path),
            chat_handler=handler,
            n_ctx=4096,
            n_threads=threads,
            verbose=False,
        )
        return cls(model, worker)

    def observe(self, image: bytes, mime_type: str, *, max_side: int | None = None) -> Observation:
        # Decoded first: what cannot be read is refused before it reaches the model.
        return self._seen.observe(image, mime_type, self.observe_image, max_side)

    def observe_image(self, image: Image.Image) -> Observation:
        png = io.BytesIO()
        image.save(png, "PNG")
        url = "data:image/png;base64," + base64.b64encode(png.getvalue()).decode("ascii")
        messages = [
            {
                "role": "user",
                "content": [
                    {"type": "image_url", "image_url": {"url": url}},
                    {"type": "text", "text": DESCRIBE_PROMPT},
                ],
            }
        ]
        began = time.perf_counter()
        reply = run_on_worker(
            functools.partial(
                self._model.create_chat_completion,
                messages=messages,
                max_tokens=DESCRIBE_MAX_TOKENS,
                temperature=0.0,
            ),
            self._worker,
        )
        text = " ".join(str(reply["choices"][0]["message"]["content"] or "").split())
        return Observation(text or "nothing recognised", {"describe": time.perf_counter() - began})
