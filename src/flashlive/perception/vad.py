"""Voice activity detection: Silero v6 (ONNX) and the per-session turn logic around it.

`SileroVad` is the shared model (one onnxruntime session, safe to call from several threads);
`VadStream` is one session's detector: it frames the audio, carries the model state, and turns
frame probabilities into speech start / pause / resume / end events on a sample timeline.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt
import onnxruntime as ort

from flashlive.errors import InvalidArgument
from flashlive.perception.audio import INPUT_RATE, FloatArray

FRAME = 512  # samples per model call at 16 kHz (32 ms): fixed by the model
CONTEXT = 64  # samples of the previous frame the model sees in front of each frame
FRAME_MS = FRAME * 1000 // INPUT_RATE
_STATE_SHAPE = (1, 1, 128)
# Audio kept after the last voiced frame in an utterance: Whisper hears the word fade out.
TAIL_MS = 96


def default_model_path() -> Path:
    return Path(str(resources.files("faster_whisper") / "assets" / "silero_vad_v6.onnx"))


@dataclass(frozen=True)
class SileroState:
    """One stream's recurrent state and the last samples it has seen."""

    h: FloatArray
    c: FloatArray
    context: FloatArray

    @classmethod
    def initial(cls) -> SileroState:
        zeros = np.zeros(_STATE_SHAPE, dtype=np.float32)
        return cls(zeros, zeros, np.zeros(CONTEXT, dtype=np.float32))


class VadModel(Protocol):
    def infer(self, frame: FloatArray, state: SileroState) -> tuple[float, SileroState]: ...


class SileroVad:
    """Silero VAD v6: speech probability of one 32 ms frame at 16 kHz."""

    def __init__(self, session: ort.InferenceSession) -> None:
        self._session = session

    @classmethod
    def load(cls, path: Path | None = None) -> SileroVad:
        options = ort.SessionOptions()
        # Per-frame work is tiny: more threads only add synchronisation and steal other cores.
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        session = ort.InferenceSession(
            str(path or default_model_path()), options, providers=["CPUExecutionProvider"]
        )
        return cls(session)

    def infer(self, frame: FloatArray, state: SileroState) -> tuple[float, SileroState]:
        if frame.shape != (FRAME,):
            raise InvalidArgument(f"Silero VAD takes frames of {FRAME} samples, got {frame.shape}.")
        window = np.concatenate([state.context, frame]).astype(np.float32, copy=False)[None, :]
        outputs: list[Any] = self._session.run(None, {"input": window, "h": state.h, "c": state.c})
        prob, h, c = outputs
        return float(np.asarray(prob).reshape(-1)[0]), SileroState(h, c, frame[-CONTEXT:].copy())


@dataclass(frozen=True)
class VadSettings:
    start_threshold: float = 0.5
    end_threshold: float = 0.35
    start_ms: int = 64  # voiced time before a start is committed
    silence_ms: int = 400  # silence that ends a turn
    pause_ms: int = 64  # silence after which a speculative pause fires
    prefix_padding_ms: int = 256  # audio kept before the onset in utterance audio
    max_utterance_ms: int = 30_000  # longer utterances are ended (bounds memory and ASR time)

    def __post_init__(self) -> None:
        for name in ("start_ms", "silence_ms", "pause_ms", "prefix_padding_ms"):
            check_ms(name, getattr(self, name))
        if self.max_utterance_ms < 1000:
            raise InvalidArgument("max_utterance_ms must be at least 1000.")
        if not 0.0 < self.end_threshold <= self.start_threshold < 1.0:
            raise InvalidArgument(
                "VAD thresholds must satisfy 0 < end_threshold <= start_threshold < 1."
            )


_MAX_MS = 60_000


def check_ms(name: str, value: int) -> None:
    """Durations in milliseconds, `name` as the caller knows the field."""
    if not 0 <= value <= _MAX_MS:
        raise InvalidArgument(f"{name} must be between 0 and {_MAX_MS} ms, got {value}.")


@dataclass(frozen=True)
class SpeechStarted:
    sample: int  # first sample of the first voiced frame


@dataclass(frozen=True, eq=False)
class SpeechPaused:
    sample: int  # end of the last voiced frame
    audio: FloatArray  # the utterance so far, for a speculative transcription


@dataclass(frozen=True)
class SpeechResumed:
    sample: int  # first sample of the frame where voice came back


@dataclass(frozen=True, eq=False)
class SpeechEnded:
    sample: int  # end of the last voiced frame
    audio: FloatArray  # the whole utterance, prefix padding and a short tail included


VadEvent = SpeechStarted | SpeechPaused | SpeechResumed | SpeechEnded


def _frames(ms: int) -> int:
    return max(1, math.ceil(ms / FRAME_MS))


class VadStream:
    """One session's detector. Not thread-safe: the caller feeds it from one task at a time."""

    def __init__(self, model: VadModel, settings: VadSettings) -> None:
        self._model = model
        self.settings = settings
        self._pad = settings.prefix_padding_ms * INPUT_RATE // 1000
        self._tail = TAIL_MS * INPUT_RATE // 1000
        self._start_frames = _frames(settings.start_ms)
        self._pause_samples = _frames(settings.pause_ms) * FRAME
        self._silence_samples = _frames(settings.silence_ms) * FRAME
        self._max_samples = settings.max_utterance_ms * INPUT_RATE // 1000
        self.reset()

    def reset(self) -> None:
        """Forgets everything, the timeline included: the stream is as new."""
        self.samples_seen = 0
        self._state = SileroState.initial()
        self._partial = np.zeros(0, dtype=np.float32)
        self._frame_pos = 0  # timeline position of the first sample in `_partial`
        self._history: deque[FloatArray] = deque()  # recent frames, ending at `_frame_pos`
        self._history_start = 0
        self._end_speech()

    def _end_speech(self) -> None:
        self._in_speech = False
        self._paused = False
        self._voiced_run = 0
        self._onset = 0
        self._last_voiced = 0

    @property
    def in_speech(self) -> bool:
        return self._in_speech

    def feed(self, samples: npt.NDArray[np.floating]) -> list[VadEvent]:
        """Takes 16 kHz float audio of any length; returns the events its complete frames cause."""
        x = np.asarray(samples, dtype=np.float32).reshape(-1)
        self.samples_seen += x.size
        buffered = np.concatenate([self._partial, x]) if self._partial.size else x
        events: list[VadEvent] = []
        whole = buffered.size - buffered.size % FRAME
        for offset in range(0, whole, FRAME):
            events.extend(self._step(buffered[offset : offset + FRAME]))
        self._partial = buffered[whole:].copy()
        return events

    def flush(self) -> list[VadEvent]:
        """The audio stream stopped (audioStreamEnd / activityEnd): ends the utterance now.

        The partial frame is dropped and the model state restarts, since the next audio is not a
        continuation; the timeline keeps counting.
        """
        events: list[VadEvent] = []
        if self._in_speech:
            events.append(SpeechEnded(self._last_voiced, self._utterance_audio()))
        self._end_speech()
        self._state = SileroState.initial()
        self._partial = np.zeros(0, dtype=np.float32)
        self._frame_pos = self.samples_seen
        self._history.clear()
        self._history_start = self._frame_pos
        return events

    def utterance(self) -> FloatArray | None:
        """The current utterance's audio so far; None outside speech."""
        return self._utterance_audio() if self._in_speech else None

    def _step(self, frame: FloatArray) -> list[VadEvent]:
        prob, self._state = self._model.infer(frame, self._state)
        start = self._frame_pos
        self._remember(frame)
        if self._in_speech:
            return self._step_speech(prob, start)
        return self._step_idle(prob, start)

    def _remember(self, frame: FloatArray) -> None:
        self._history.append(frame.copy())
        self._frame_pos += FRAME
        if not self._in_speech:
            self._trim_history()

    def _trim_history(self) -> None:
        # Outside speech keep only what a coming onset could reach back to.
        keep = self._pad + (self._start_frames + 1) * FRAME
        while self._history and self._frame_pos - self._history_start - FRAME >= keep:
            self._history.popleft()
            self._history_start += FRAME

    def _step_idle(self, prob: float, start: int) -> list[VadEvent]:
        if prob < self.settings.start_threshold:
            self._voiced_run = 0
            return []
        self._voiced_run += 1
        if self._voiced_run < self._start_frames:
            return []
        self._in_speech = True
        self._onset = start - (self._voiced_run - 1) * FRAME
        self._last_voiced = self._frame_pos
        return [SpeechStarted(self._onset)]

    def _step_speech(self, prob: float, start: int) -> list[VadEvent]:
        events: list[VadEvent] = []
        if prob >= self.settings.end_threshold:
            self._last_voiced = self._frame_pos
            if self._paused:
                self._paused = False
                events.append(SpeechResumed(start))
        else:
            silence = self._frame_pos - self._last_voiced
            if silence >= self._silence_samples:
                return [self._finish(self._last_voiced)]
            if not self._paused and silence >= self._pause_samples:
                self._paused = True
                events.append(SpeechPaused(self._last_voiced, self._utterance_audio()))
        if self._frame_pos - self._onset >= self._max_samples:
            events.append(self._finish(self._frame_pos))
        return events

    def _finish(self, end: int) -> SpeechEnded:
        self._last_voiced = end
        event = SpeechEnded(end, self._utterance_audio())
        self._end_speech()
        self._trim_history()
        return event

    def _utterance_audio(self) -> FloatArray:
        first = max(self._onset - self._pad, self._history_start)
        last = min(self._last_voiced + self._tail, self._frame_pos)
        audio = np.concatenate(self._history) if self._history else np.zeros(0, np.float32)
        return audio[first - self._history_start : last - self._history_start].copy()
