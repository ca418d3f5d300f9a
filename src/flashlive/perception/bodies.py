"""Faces, hands and a person's pose in an image, as one short phrase: "faces: 1; hands: 2".

A text-only model is told that someone is in the picture, which neither OCR nor ImageNet labels
say reliably. MediaPipe's legacy solutions do it offline, with models inside the wheel, in 35-70
ms a frame on one core; they keep per-graph state, so each call holds a lock.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import sys
import threading
import types
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
from PIL import Image

MEDIAPIPE_VERSION = "0.10.21"  # the version scripts/install.sh installs and this was tested with
MIN_CONFIDENCE = 0.5  # a drawn face scores 0.80; cats, cups and noise found nothing at 0.5
MAX_HANDS = 2
# The detectors look at 192-256 px inputs: a larger frame only costs copying.
MAX_SIDE = 1024


class BodyDetector:
    """Counts faces and hands and tells whether a person's pose is visible."""

    def __init__(self, faces: Any, hands: Any, pose: Any) -> None:
        self._faces = faces
        self._hands = hands
        self._pose = pose
        self._lock = threading.Lock()
        self._closed = False

    @classmethod
    def load(cls) -> BodyDetector:
        """Blocking (a second or so): builds the three graphs and runs them once on a blank frame,
        so that a broken install fails here rather than on the first real image."""
        solutions = _import_solutions()
        detector = cls(
            # Model 1 is the full-range detector: faces up to about 5 m, not only at arm's length.
            solutions.face_detection.FaceDetection(
                model_selection=1, min_detection_confidence=MIN_CONFIDENCE
            ),
            solutions.hands.Hands(
                static_image_mode=True,
                max_num_hands=MAX_HANDS,
                model_complexity=1,
                min_detection_confidence=MIN_CONFIDENCE,
            ),
            # Complexity 1 is the pose model in the wheel; 0 and 2 are downloaded on first use,
            # which an offline server cannot do.
            solutions.pose.Pose(
                static_image_mode=True,
                model_complexity=1,
                min_detection_confidence=MIN_CONFIDENCE,
            ),
        )
        try:
            detector.describe(Image.new("RGB", (64, 64)))
        except Exception:
            detector.close()
            raise
        return detector

    def describe(self, image: Image.Image) -> str | None:
        """A phrase for what was found ("faces: 1; hands: 2; a person's pose"), or None."""
        if max(image.size) > MAX_SIDE:
            # Box-averaging by a whole factor: a tenth of the time of a resampled thumbnail.
            image = image.reduce(-(-max(image.size) // MAX_SIDE))
        pixels = np.ascontiguousarray(image.convert("RGB"), dtype=np.uint8)
        with self._lock:
            if self._closed:
                raise RuntimeError("the body detector is closed")
            faces = len(self._faces.process(pixels).detections or ())
            hands = len(self._hands.process(pixels).multi_hand_landmarks or ())
            posed = self._pose.process(pixels).pose_landmarks is not None
        found = [f"faces: {faces}"] if faces else []
        found += [f"hands: {hands}"] if hands else []
        found += ["a person's pose"] if posed else []
        return "; ".join(found) if found else None

    def close(self) -> None:
        """Frees the graphs; later calls to `describe` raise."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            for solution in (self._faces, self._hands, self._pose):
                solution.close()


def _import_solutions() -> Any:
    """mediapipe.solutions, with a clear error when the install cannot run it."""
    protobuf = importlib.metadata.version("protobuf")
    if not protobuf.startswith("4."):
        # On protobuf 5+ the graphs fail on removed descriptor APIs, deep inside mediapipe.
        raise RuntimeError(
            f"mediapipe {MEDIAPIPE_VERSION} needs protobuf 4, not {protobuf}: "
            "install with -c scripts/constraints.txt"
        )
    with _matplotlib_stand_in():
        mediapipe = importlib.import_module("mediapipe")
    if mediapipe.__version__ != MEDIAPIPE_VERSION:
        raise RuntimeError(
            f"mediapipe {mediapipe.__version__} is installed; this was built for "
            f"{MEDIAPIPE_VERSION} (see scripts/install.sh)"
        )
    return mediapipe.solutions


@contextmanager
def _matplotlib_stand_in() -> Iterator[None]:
    """An empty `matplotlib.pyplot` while mediapipe is imported, if matplotlib is missing.

    `import mediapipe` imports its drawing helpers, whose top level says `import
    matplotlib.pyplot` for `plot_landmarks` alone; nothing here draws, so 40 MB of matplotlib would
    be dead weight. The stand-in is removed once mediapipe is in, so other imports of matplotlib
    still fail as usual; anything read from it raises an error saying why.
    """
    if "matplotlib" in sys.modules or importlib.util.find_spec("matplotlib") is not None:
        yield
        return
    package = types.ModuleType("matplotlib")
    pyplot = types.ModuleType("matplotlib.pyplot")
    pyplot.__getattr__ = _not_installed  # type: ignore[method-assign]
    package.pyplot = pyplot  # type: ignore[attr-defined]
    sys.modules["matplotlib"] = package
    sys.modules["matplotlib.pyplot"] = pyplot
    try:
        yield
    finally:
        del sys.modules["matplotlib.pyplot"], sys.modules["matplotlib"]


def _not_installed(name: str) -> Any:
    raise AttributeError(f"matplotlib is not installed: mediapipe's plotting ({name}) is off")
