"""PCM16 framing and sample-rate conversion for the Live audio paths.

The Gemini Live protocol carries microphone audio in as PCM16 LE mono (16 kHz unless the mime type
says otherwise) and model speech out as PCM16 LE mono 24 kHz; everything in between is float32.
"""

from __future__ import annotations

import io
import re

import numpy as np
import numpy.typing as npt
import soxr

from flashlive.errors import InvalidArgument
from flashlive.perception.mime import mime_base

INPUT_RATE = 16000
OUTPUT_RATE = 24000
MIN_RATE = 8000
MAX_RATE = 48000

FloatArray = npt.NDArray[np.float32]

_PCM_MIME = re.compile(r"^\s*audio/(?:pcm|l16)\s*(?P<params>(?:;[^;]*)*)$", re.IGNORECASE)
_INT16_SCALE = 32768.0
_RATE = re.compile("[0-9]{1,6}")


def parse_pcm_mime(mime: str) -> int:
    """Returns the sample rate of an `audio/pcm[;rate=N]` (or `audio/L16;rate=N`) mime type."""
    match = _PCM_MIME.match(mime)
    if match is None:
        raise InvalidArgument(
            f"Unsupported audio mime type {mime!r}: expected 'audio/pcm' or 'audio/pcm;rate=N' "
            "(16-bit little-endian mono PCM)."
        )
    rate = _rate_param(match.group("params"), mime)
    if not MIN_RATE <= rate <= MAX_RATE:
        raise InvalidArgument(
            f"Unsupported audio sample rate {rate} in {mime!r}: expected {MIN_RATE}..{MAX_RATE} Hz."
        )
    return rate


def _rate_param(params: str, mime: str) -> int:
    rate = INPUT_RATE
    for param in filter(None, (p.strip() for p in params.split(";"))):
        name, _, value = (part.strip() for part in param.partition("="))
        if name.lower() != "rate":
            continue  # e.g. `channels=1`: harmless, the wire format is fixed
        # ASCII digits only: str.isdigit() also takes "¹⁶⁰⁰⁰", which int() then refuses.
        if not _RATE.fullmatch(value):
            raise InvalidArgument(f"Invalid audio sample rate {value!r} in {mime!r}.")
        rate = int(value)
    return rate


def pcm16_to_float(data: bytes) -> FloatArray:
    """Little-endian int16 samples → float32 in [-1, 1)."""
    if len(data) % 2:
        raise InvalidArgument(
            f"PCM16 audio must have an even number of bytes, got {len(data)} bytes."
        )
    samples = np.frombuffer(data, dtype="<i2")
    return (samples.astype(np.float32) / _INT16_SCALE).astype(np.float32, copy=False)


def float_to_pcm16(x: npt.NDArray[np.floating]) -> bytes:
    """Float samples (clipped to [-1, 1]) → little-endian int16 bytes; inverts `pcm16_to_float`."""
    scaled = np.round(np.asarray(x, dtype=np.float32) * _INT16_SCALE)
    return np.clip(scaled, -_INT16_SCALE, _INT16_SCALE - 1).astype("<i2").tobytes()


def _check_rate(rate: int) -> None:
    if not MIN_RATE <= rate <= MAX_RATE:
        raise InvalidArgument(f"Sample rate {rate} Hz is outside {MIN_RATE}..{MAX_RATE} Hz.")


def _as_float32(x: npt.NDArray[np.floating]) -> FloatArray:
    return np.ascontiguousarray(x, dtype=np.float32).reshape(-1)


class Resampler:
    """Streaming anti-aliased resampler (libsoxr): chunked output equals one-shot output.

    soxr keeps the filter history between chunks, so chunk boundaries leave no clicks; it delays its
    output by the filter length, which `flush` releases at the end of a stream.
    """

    def __init__(self, src_rate: int, dst_rate: int) -> None:
        _check_rate(src_rate)
        _check_rate(dst_rate)
        self.src_rate = src_rate
        self.dst_rate = dst_rate
        self._stream = (
            None if src_rate == dst_rate else soxr.ResampleStream(src_rate, dst_rate, 1, "float32")
        )

    def feed(self, x: npt.NDArray[np.floating]) -> FloatArray:
        samples = _as_float32(x)
        if self._stream is None:
            return samples
        return _as_float32(self._stream.resample_chunk(samples))

    def flush(self) -> FloatArray:
        """Ends the stream: returns the samples still held in the filter and starts afresh."""
        if self._stream is None:
            return np.zeros(0, dtype=np.float32)
        tail = _as_float32(self._stream.resample_chunk(np.zeros(0, np.float32), last=True))
        self._stream.clear()
        return tail


def resample(x: npt.NDArray[np.floating], src_rate: int, dst_rate: int) -> FloatArray:
    """One-shot resampling of a whole signal."""
    _check_rate(src_rate)
    _check_rate(dst_rate)
    samples = _as_float32(x)
    if src_rate == dst_rate or samples.size == 0:
        return samples
    return _as_float32(soxr.resample(samples, src_rate, dst_rate))


# Encoded audio a request may carry whole (PyAV decodes them); raw PCM goes through
# `parse_pcm_mime`.
AUDIO_FILE_MIMES = frozenset(
    {
        "audio/wav",
        "audio/x-wav",
        "audio/wave",
        "audio/mpeg",
        "audio/mp3",
        "audio/flac",
        "audio/x-flac",
        "audio/ogg",
        "audio/opus",
        "audio/webm",
        "audio/aac",
        "audio/mp4",
        "audio/aiff",
    }
)


def decode_audio(data: bytes, mime: str) -> FloatArray:
    """A whole audio part (a file, or raw PCM) as 16 kHz mono float32."""
    base = mime_base(mime)
    if base in ("audio/pcm", "audio/l16"):
        if len(data) % 2:
            raise InvalidArgument(f"{mime} data has an odd number of bytes: not 16-bit PCM")
        rate = parse_pcm_mime(mime)
        samples = pcm16_to_float(data)
        return samples if rate == INPUT_RATE else resample(samples, rate, INPUT_RATE)
    if base not in AUDIO_FILE_MIMES:
        raise InvalidArgument(
            f"{mime} is not an audio type this server reads "
            f"(audio/pcm;rate=N or one of {', '.join(sorted(AUDIO_FILE_MIMES))})"
        )
    import av
    from faster_whisper.audio import decode_audio as av_decode

    try:
        samples = av_decode(io.BytesIO(data), sampling_rate=INPUT_RATE)
    except (av.error.FFmpegError, ValueError, IndexError) as exc:
        raise InvalidArgument(f"the {mime} data is not readable audio: {exc}") from None
    if samples.size == 0:
        raise InvalidArgument(f"the {mime} data holds no audio")
    return _as_float32(samples)
