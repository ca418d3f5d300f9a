"""Perception on the real models: Silero VAD, Whisper tiny.en, Piper, espeak-ng.

Test speech is made with the Debian `espeak-ng` and `sox` binaries into pytest's tmp_path.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from speech import spoken, word_error_rate

from flashlive.errors import InvalidArgument
from flashlive.live.activity import vad_settings
from flashlive.perception.asr import MAX_BATCH, Transcriber
from flashlive.perception.audio import INPUT_RATE, OUTPUT_RATE, pcm16_to_float, resample
from flashlive.perception.tts import (
    EspeakSynthesizer,
    PiperSynthesizer,
    load_synthesizer,
)
from flashlive.perception.vad import (
    SileroVad,
    SpeechEnded,
    SpeechStarted,
    VadEvent,
    VadStream,
)
from flashlive.perception.worker import FairWorker

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the models are in wheels: never reach for the hub


SENTENCES = [
    "Please turn on the kitchen lights and set a timer for ten minutes.",
    "What is the weather going to be like tomorrow morning in Paris?",
    "Can you remind me to call my mother on Sunday afternoon?",
]
MAX_WER = 0.2


def espeak_speech(tmp_path: Path, text: str) -> np.ndarray:
    return pcm16_to_float(spoken(text, tmp_path, voice="espeak"))


def voiced_span(audio: np.ndarray, offset: int) -> tuple[float, float]:
    loud = np.nonzero(np.abs(audio) > 0.02)[0]
    return (offset + loud[0]) / INPUT_RATE, (offset + loud[-1]) / INPUT_RATE


def run_vad(model: SileroVad, audio: np.ndarray) -> list[VadEvent]:
    stream = VadStream(model, vad_settings(None, None, None, None))
    events: list[VadEvent] = []
    for i in range(0, audio.size, 1600):  # 100 ms chunks, as a client would send them
        events += stream.feed(audio[i : i + 1600])
    return events + stream.flush()


@pytest.fixture(scope="module")
def vad() -> SileroVad:
    return SileroVad.load()


@pytest.fixture(scope="module")
def transcriber() -> Iterator[Transcriber]:
    t = Transcriber.load()
    yield t
    t.close()


@pytest.fixture(scope="module")
def piper() -> Iterator[PiperSynthesizer]:
    p = PiperSynthesizer.load()
    yield p
    p.close()


def test_silero_finds_one_utterance_at_the_voiced_region(vad: SileroVad, tmp_path: Path) -> None:
    speech = espeak_speech(tmp_path, SENTENCES[0])
    lead = INPUT_RATE
    audio = np.concatenate(
        [np.zeros(lead, np.float32), speech, np.zeros(2 * INPUT_RATE, np.float32)]
    )
    events = run_vad(vad, audio)
    starts = [e for e in events if isinstance(e, SpeechStarted)]
    ends = [e for e in events if isinstance(e, SpeechEnded)]
    assert len(starts) == len(ends) == 1, events
    begin, end = voiced_span(speech, lead)
    assert abs(starts[0].sample / INPUT_RATE - begin) < 0.3
    assert abs(ends[0].sample / INPUT_RATE - end) < 0.3
    assert ends[0].audio.size / INPUT_RATE >= end - begin


@pytest.mark.parametrize("amplitude", [0.0, 0.01, 0.1, 0.3])
def test_silero_finds_nothing_in_silence_or_white_noise(vad: SileroVad, amplitude: float) -> None:
    rng = np.random.default_rng(7)
    noise = np.clip(rng.standard_normal(5 * INPUT_RATE) * amplitude, -1, 1).astype(np.float32)
    assert run_vad(vad, noise) == []


async def test_whisper_transcribes_sentences(transcriber: Transcriber, tmp_path: Path) -> None:
    for sentence in SENTENCES:
        transcript = await transcriber.transcribe("client", espeak_speech(tmp_path, sentence))
        assert word_error_rate(sentence, transcript.text) <= MAX_WER, transcript
        assert transcript.text == transcript.text.strip()
        assert transcript.no_speech_prob < 0.5
        # The trimmed encoder: well under the ~0.4 s a full 30 s window costs here.
        assert transcript.compute_seconds < transcript.audio_seconds


class CountingRunner:
    """The real Whisper runner, counting the utterances in each batch it decodes."""

    def __init__(self, runner: Any) -> None:
        self._runner = runner
        self.batches: list[int] = []

    def transcribe(self, audios: list[np.ndarray]) -> list[Any]:
        self.batches.append(len(audios))
        return self._runner.transcribe(audios)  # type: ignore[no-any-return]


async def test_utterances_of_two_sessions_ending_together_decode_in_one_batch(
    transcriber: Transcriber, tmp_path: Path
) -> None:
    runner = CountingRunner(transcriber._runner)
    worker = FairWorker("speech recognition", max_batch=MAX_BATCH)
    batched = Transcriber(runner, worker)  # type: ignore[arg-type]
    try:
        started, release = threading.Event(), threading.Event()

        def hold() -> None:  # another session's work occupies the worker meanwhile
            started.set()
            release.wait(10)

        busy = asyncio.create_task(worker.run("session-a", hold))
        await asyncio.to_thread(started.wait, 10)
        speech = [espeak_speech(tmp_path, sentence) for sentence in SENTENCES[:2]]
        both = [
            asyncio.create_task(batched.transcribe(f"session-{name}", audio))
            for name, audio in zip("bc", speech, strict=True)
        ]
        while worker.pending < 2:
            await asyncio.sleep(0.01)
        release.set()
        await busy
        transcripts = await asyncio.gather(*both)
    finally:
        batched.close()
    assert runner.batches == [2]
    for sentence, transcript in zip(SENTENCES, transcripts, strict=False):
        assert word_error_rate(sentence, transcript.text) <= MAX_WER, transcript


async def test_vad_cut_speech_is_transcribed(
    vad: SileroVad, transcriber: Transcriber, tmp_path: Path
) -> None:
    speech = espeak_speech(tmp_path, SENTENCES[1])
    silence = np.zeros(INPUT_RATE, np.float32)
    [ended] = [
        e
        for e in run_vad(vad, np.concatenate([silence, speech, silence]))
        if isinstance(e, SpeechEnded)
    ]
    transcript = await transcriber.transcribe("client", ended.audio)
    assert word_error_rate(SENTENCES[1], transcript.text) <= MAX_WER, transcript


@pytest.mark.parametrize("amplitude", [0.0, 0.05])
async def test_whisper_returns_no_text_for_silence_or_noise(
    transcriber: Transcriber, amplitude: float
) -> None:
    rng = np.random.default_rng(3)
    noise = (rng.standard_normal(INPUT_RATE) * amplitude).astype(np.float32)
    assert (await transcriber.transcribe("client", noise)).text == ""


async def test_whisper_refuses_over_long_audio(transcriber: Transcriber) -> None:
    with pytest.raises(InvalidArgument):
        await transcriber.transcribe("client", np.zeros(31 * INPUT_RATE, np.float32))


async def check_spoken(pcm: bytes, text: str, transcriber: Transcriber) -> None:
    assert pcm and len(pcm) % 2 == 0
    audio = pcm16_to_float(pcm)
    assert 0.3 < audio.size / OUTPUT_RATE < 10
    assert np.sqrt(np.mean(audio**2)) > 0.03
    transcript = await transcriber.transcribe("check", resample(audio, OUTPUT_RATE, INPUT_RATE))
    assert word_error_rate(text, transcript.text) <= MAX_WER, transcript


async def test_piper_speaks_the_text(piper: PiperSynthesizer, transcriber: Transcriber) -> None:
    # Short answers too: Whisper gets a longer window for them, where it stops repeating itself.
    for sentence in [*SENTENCES, "Yes.", "No, thank you."]:
        await check_spoken(await piper.synthesize("client", sentence), sentence, transcriber)
    assert await piper.synthesize("client", "   ") == b""


async def test_espeak_fallback_speaks_the_text(transcriber: Transcriber) -> None:
    espeak = EspeakSynthesizer()
    # A leading dash must be read, not taken for a command-line option.
    text = "-" + SENTENCES[2]
    await check_spoken(await espeak.synthesize("client", text), SENTENCES[2], transcriber)


def test_load_synthesizer_prefers_piper() -> None:
    synthesizer = load_synthesizer()
    try:
        assert synthesizer.name == "piper"
    finally:
        synthesizer.close()
