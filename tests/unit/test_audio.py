import io
import wave

import numpy as np
import pytest

from flashlive.errors import InvalidArgument
from flashlive.perception.audio import (
    INPUT_RATE,
    OUTPUT_RATE,
    Resampler,
    decode_audio,
    float_to_pcm16,
    parse_pcm_mime,
    pcm16_to_float,
    resample,
)


@pytest.mark.parametrize(
    ("mime", "rate"),
    [
        ("audio/pcm", 16000),
        ("audio/pcm;rate=24000", 24000),
        ("Audio/PCM ; Rate = 8000", 8000),
        ("audio/pcm;rate=48000;channels=1", 48000),
        ("audio/L16;rate=22050", 22050),
        ("audio/pcm;", 16000),
    ],
)
def test_pcm_mime_types_give_their_rate(mime: str, rate: int) -> None:
    assert parse_pcm_mime(mime) == rate


@pytest.mark.parametrize(
    ("mime", "complaint"),
    [
        ("audio/wav", "mime type"),
        ("audio/pcmx", "mime type"),
        ("video/pcm;rate=16000", "mime type"),
        ("", "mime type"),
        ("audio/pcm;rate=7999", "7999"),
        ("audio/pcm;rate=96000", "96000"),
        ("audio/pcm;rate=abc", "abc"),
        ("audio/pcm;rate=-16000", "-16000"),
        ("audio/pcm;rate=\u00b9\u2076\u2070\u2070\u2070", "Invalid audio sample rate"),
        ("audio/pcm;rate=\u0661\u0666\u0660\u0660\u0660", "Invalid audio sample rate"),
        ("audio/pcm;rate=" + "1" * 5000, "Invalid audio sample rate"),
    ],
)
def test_other_mime_types_and_rates_are_refused(mime: str, complaint: str) -> None:
    with pytest.raises(InvalidArgument, match=complaint):
        parse_pcm_mime(mime)


def test_pcm16_round_trip_is_exact() -> None:
    samples = np.array([0, 1, -1, 32767, -32768, 12345], dtype="<i2")
    data = samples.tobytes()
    x = pcm16_to_float(data)
    assert x.dtype == np.float32
    assert x.min() >= -1.0 and x.max() < 1.0
    back = np.frombuffer(float_to_pcm16(x), dtype="<i2")
    assert back.tolist() == samples.tolist()


def test_pcm16_of_odd_length_is_refused() -> None:
    with pytest.raises(InvalidArgument, match="even"):
        pcm16_to_float(b"\x00\x01\x02")


def test_float_to_pcm16_clips_and_is_little_endian() -> None:
    data = float_to_pcm16(np.array([2.0, -2.0, 0.5], dtype=np.float32))
    assert data == b"\xff\x7f\x00\x80\x00\x40"


def sine(freq: float, rate: int, seconds: float) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def dominant_frequency(x: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(x * np.hanning(x.size)))
    return float(np.fft.rfftfreq(x.size, 1 / rate)[np.argmax(spectrum)])


def test_resampling_keeps_a_sine_frequency_and_length() -> None:
    x = sine(440.0, INPUT_RATE, 1.0)
    y = resample(x, INPUT_RATE, OUTPUT_RATE)
    assert y.dtype == np.float32
    assert y.size == OUTPUT_RATE
    assert dominant_frequency(y, OUTPUT_RATE) == pytest.approx(440.0, abs=2.0)


def test_downsampling_removes_what_the_new_rate_cannot_carry() -> None:
    # 10 kHz is above the 8 kHz Nyquist frequency of 16 kHz audio: it must not fold back as 6 kHz.
    x = sine(10_000.0, 48_000, 1.0)
    y = resample(x, 48_000, INPUT_RATE)
    assert np.sqrt(np.mean(y[1000:-1000] ** 2)) < 0.01


def test_streaming_resampler_matches_one_shot() -> None:
    x = sine(1000.0, 22050, 0.7) + sine(3000.0, 22050, 0.7)
    stream = Resampler(22050, OUTPUT_RATE)
    chunks = [stream.feed(x[i : i + 317]) for i in range(0, x.size, 317)]
    streamed = np.concatenate([*chunks, stream.flush()])
    whole = resample(x, 22050, OUTPUT_RATE)
    assert streamed.size == whole.size
    np.testing.assert_allclose(streamed, whole, atol=1e-4)


def test_streamed_chunks_join_without_clicks() -> None:
    x = sine(440.0, INPUT_RATE, 1.0)
    stream = Resampler(INPUT_RATE, OUTPUT_RATE)
    y = np.concatenate([stream.feed(x[i : i + 160]) for i in range(0, x.size, 160)])
    # A 440 Hz sine at 0.5 moves at most 2π·440·0.5/24000 ≈ 0.058 per sample; a click jumps more.
    assert np.max(np.abs(np.diff(y))) < 0.07


def test_equal_rates_pass_audio_through() -> None:
    x = sine(440.0, INPUT_RATE, 0.1)
    stream = Resampler(INPUT_RATE, INPUT_RATE)
    np.testing.assert_array_equal(stream.feed(x), x)
    assert stream.flush().size == 0
    np.testing.assert_array_equal(resample(x, INPUT_RATE, INPUT_RATE), x)


def test_resampler_refuses_absurd_rates() -> None:
    with pytest.raises(InvalidArgument):
        Resampler(0, OUTPUT_RATE)
    with pytest.raises(InvalidArgument):
        resample(np.zeros(10, np.float32), INPUT_RATE, 1_000_000)


def wav(samples: np.ndarray, rate: int) -> bytes:
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes((samples * 32767).astype("<i2").tobytes())
    return out.getvalue()


def test_a_whole_audio_file_decodes_to_16k_mono() -> None:
    tone = np.sin(np.arange(22050) * 2 * np.pi * 440 / 22050).astype(np.float32) * 0.5
    samples = decode_audio(wav(tone, 22050), "audio/wav")
    assert samples.dtype == np.float32 and abs(samples.size - 16000) <= 16


def test_raw_pcm_parts_use_their_rate() -> None:
    pcm = (np.zeros(8000, np.float32)).astype("<i2").tobytes()
    assert decode_audio(pcm, "audio/pcm;rate=8000").size == 16000
    with pytest.raises(InvalidArgument, match="odd number"):
        decode_audio(pcm[:-1], "audio/pcm;rate=8000")


@pytest.mark.parametrize(
    ("data", "mime", "complaint"),
    [
        (b"no audio here" * 20, "audio/mpeg", "not readable audio"),
        (b"x", "audio/midi", "not an audio type"),
    ],
)
def test_unreadable_audio_is_an_invalid_argument(data: bytes, mime: str, complaint: str) -> None:
    with pytest.raises(InvalidArgument, match=complaint):
        decode_audio(data, mime)
