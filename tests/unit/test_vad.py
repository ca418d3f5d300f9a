from collections.abc import Sequence

import numpy as np
import pytest

from flashlive.errors import InvalidArgument
from flashlive.live.activity import vad_settings
from flashlive.perception.vad import (
    FRAME,
    SileroState,
    SpeechEnded,
    SpeechPaused,
    SpeechResumed,
    SpeechStarted,
    VadEvent,
    VadSettings,
    VadStream,
)

MS = 16  # samples per millisecond at 16 kHz


class ScriptedModel:
    """Returns scripted speech probabilities, one per frame, then silence."""

    def __init__(self, probs: Sequence[float]) -> None:
        self.probs = list(probs)
        self.calls = 0

    def infer(self, frame: np.ndarray, state: SileroState) -> tuple[float, SileroState]:
        assert frame.shape == (FRAME,)
        prob = self.probs[self.calls] if self.calls < len(self.probs) else 0.0
        self.calls += 1
        return prob, state


SETTINGS = VadSettings(
    start_threshold=0.5,
    end_threshold=0.35,
    start_ms=64,
    silence_ms=320,
    pause_ms=96,
    prefix_padding_ms=64,
)


def ramp(frames: int) -> np.ndarray:
    """Audio whose every sample is its own index, so slices can be checked exactly."""
    return (np.arange(frames * FRAME) / 1e6).astype(np.float32)


def run(probs: Sequence[float], frames: int, settings: VadSettings = SETTINGS, chunk: int = 700):
    stream = VadStream(ScriptedModel(probs), settings)
    audio = ramp(frames)
    events: list[VadEvent] = []
    for i in range(0, audio.size, chunk):
        events += stream.feed(audio[i : i + chunk])
    return stream, events


def index_range(audio: np.ndarray) -> tuple[int, int]:
    """The timeline span [first, last) that a slice of `ramp` audio covers."""
    return round(float(audio[0]) * 1e6), round(float(audio[-1]) * 1e6) + 1


def test_onset_is_the_first_voiced_frame_reported_after_start_ms() -> None:
    stream = VadStream(ScriptedModel([0, 0, 0.9, 0.9, 0.9]), SETTINGS)
    assert stream.feed(ramp(3)) == []  # one voiced frame is not enough for 64 ms
    assert stream.feed(ramp(1)) == [SpeechStarted(2 * FRAME)]
    assert stream.in_speech


def test_a_voiced_blip_shorter_than_start_ms_is_ignored() -> None:
    _, events = run([0, 0.9, 0, 0.9, 0, 0], frames=20)
    assert events == []


def test_end_after_silence_ms_reports_the_last_voiced_sample() -> None:
    probs = [0] * 4 + [0.9] * 10 + [0.1] * 20
    stream, events = run(probs, frames=34)
    assert [type(e) for e in events] == [SpeechStarted, SpeechPaused, SpeechEnded]
    started, paused, ended = events
    assert started.sample == 4 * FRAME
    assert paused.sample == ended.sample == 14 * FRAME
    assert not stream.in_speech
    assert stream.utterance() is None


def test_pause_fires_after_pause_ms_and_resume_when_voice_returns() -> None:
    # 3 silent frames = 96 ms: a pause; voice again before 320 ms: a resume, and the turn goes on.
    probs = [0.9] * 5 + [0.1] * 3 + [0.8] * 4 + [0.1] * 12
    _, events = run(probs, frames=24)
    assert [type(e) for e in events] == [
        SpeechStarted,
        SpeechPaused,
        SpeechResumed,
        SpeechPaused,
        SpeechEnded,
    ]
    assert events[1].sample == 5 * FRAME
    assert events[2] == SpeechResumed(8 * FRAME)
    assert events[4].sample == 12 * FRAME


def test_frames_between_end_and_start_threshold_keep_speech_going() -> None:
    probs = [0.9] * 3 + [0.4] * 15 + [0.0] * 12
    _, events = run(probs, frames=30)
    assert [type(e) for e in events] == [SpeechStarted, SpeechPaused, SpeechEnded]
    assert events[-1].sample == 18 * FRAME


def test_utterance_audio_spans_padding_before_onset_to_a_tail_after_the_voice() -> None:
    probs = [0] * 6 + [0.9] * 10 + [0.0] * 12
    _, events = run(probs, frames=28)
    ended = events[-1]
    assert isinstance(ended, SpeechEnded)
    first, last = index_range(ended.audio)
    assert first == 6 * FRAME - 64 * MS  # prefix padding before the onset
    assert last == 16 * FRAME + 96 * MS  # the tail after the last voiced frame
    paused = events[1]
    assert isinstance(paused, SpeechPaused)
    assert index_range(paused.audio) == (first, last)


def test_padding_is_limited_by_the_start_of_the_stream() -> None:
    _, events = run([0.9] * 4 + [0.0] * 12, frames=16)
    ended = events[-1]
    assert isinstance(ended, SpeechEnded)
    assert index_range(ended.audio)[0] == 0


def test_utterance_so_far_is_available_during_speech() -> None:
    stream, events = run([0] * 3 + [0.9] * 5, frames=8, chunk=FRAME)
    assert events == [SpeechStarted(3 * FRAME)]
    audio = stream.utterance()
    assert audio is not None
    assert index_range(audio) == (3 * FRAME - 64 * MS, 8 * FRAME)


def test_an_over_long_utterance_is_force_ended() -> None:
    settings = VadSettings(max_utterance_ms=1000, prefix_padding_ms=0)
    frames = 2000 // 32
    stream, events = run([0.9] * frames, frames=frames, settings=settings)
    types = [type(e) for e in events]
    assert types == [SpeechStarted, SpeechEnded, SpeechStarted]
    ended = events[1]
    assert isinstance(ended, SpeechEnded)
    assert ended.sample - events[0].sample >= 1000 * MS
    assert ended.audio.size <= 1000 * MS + FRAME
    assert stream.in_speech


def test_memory_outside_speech_stays_bounded() -> None:
    stream, _ = run([], frames=2000)
    assert sum(frame.size for frame in stream._history) <= 10 * FRAME


def test_flush_ends_the_utterance_and_keeps_the_timeline() -> None:
    stream, events = run([0.9] * 6, frames=6)
    assert events == [SpeechStarted(0)]
    stream.feed(np.zeros(100, np.float32))
    [ended] = stream.flush()
    assert isinstance(ended, SpeechEnded)
    assert ended.sample == 6 * FRAME
    assert stream.samples_seen == 6 * FRAME + 100
    assert stream.flush() == []
    assert not stream.in_speech


def test_flush_drops_the_partial_frame_so_later_frames_start_after_it() -> None:
    model = ScriptedModel([0, 0.9, 0.9])
    stream = VadStream(model, SETTINGS)
    stream.feed(np.zeros(FRAME + 100, np.float32))
    stream.flush()
    assert stream.feed(np.zeros(2 * FRAME, np.float32)) == [SpeechStarted(FRAME + 100)]


def test_reset_starts_afresh() -> None:
    stream, _ = run([0.9] * 6, frames=6)
    stream.reset()
    assert stream.samples_seen == 0
    assert not stream.in_speech
    assert stream.utterance() is None


def test_samples_seen_counts_partial_frames() -> None:
    stream = VadStream(ScriptedModel([]), SETTINGS)
    stream.feed(np.zeros(1000, np.float32))
    stream.feed(np.zeros(30, np.float32))
    assert stream.samples_seen == 1030


def test_chunking_does_not_change_events() -> None:
    probs = [0, 0.9, 0.9, 0.9, 0.1, 0.1, 0.1, 0.1, 0.9, 0.9] + [0.0] * 12
    _, by_frame = run(probs, frames=22, chunk=FRAME)
    _, by_odd = run(probs, frames=22, chunk=333)
    assert [(type(e), e.sample) for e in by_frame] == [(type(e), e.sample) for e in by_odd]


def test_live_defaults_report_onset_within_100_ms() -> None:
    settings = vad_settings(None, None, None, None)
    assert settings.start_ms <= 100
    assert settings.pause_ms < settings.silence_ms
    assert settings == vad_settings(
        "START_SENSITIVITY_UNSPECIFIED", "END_SENSITIVITY_UNSPECIFIED", None, None
    )


def test_start_sensitivity_high_starts_on_less_speech_than_low() -> None:
    high = vad_settings("START_SENSITIVITY_HIGH", None, None, None)
    low = vad_settings("START_SENSITIVITY_LOW", None, None, None)
    assert high.start_ms < low.start_ms
    assert high.start_threshold < low.start_threshold
    probs = [0.9] * 3 + [0.0] * 30
    assert run(probs, frames=33, settings=high)[1] != []
    assert run(probs, frames=33, settings=low)[1] == []


def test_end_sensitivity_high_ends_after_shorter_silence_than_low() -> None:
    high = vad_settings(None, "END_SENSITIVITY_HIGH", None, None)
    low = vad_settings(None, "END_SENSITIVITY_LOW", None, None)
    assert high.silence_ms < low.silence_ms
    probs = [0.9] * 5 + [0.0] * 20  # 640 ms of silence
    assert isinstance(run(probs, frames=25, settings=high)[1][-1], SpeechEnded)
    assert not isinstance(run(probs, frames=25, settings=low)[1][-1], SpeechEnded)


def test_explicit_durations_override_sensitivities() -> None:
    settings = vad_settings("START_SENSITIVITY_LOW", "END_SENSITIVITY_LOW", 20, 1500)
    assert settings.start_ms == 20
    assert settings.silence_ms == 1500


@pytest.mark.parametrize(
    "args",
    [
        ("START_SENSITIVITY_MEDIUM", None, None, None),
        (None, "LOW", None, None),
        (None, None, -1, None),
        (None, None, None, -5),
        (None, None, None, 10**9),
    ],
)
def test_bad_live_settings_are_refused(
    args: tuple[str | None, str | None, int | None, int | None],
) -> None:
    with pytest.raises(InvalidArgument):
        vad_settings(*args)


def test_inconsistent_thresholds_are_refused() -> None:
    with pytest.raises(InvalidArgument):
        VadSettings(start_threshold=0.3, end_threshold=0.6)
