"""Gemini's `automaticActivityDetection` in the VAD's own terms (thresholds and milliseconds).

The detector in `perception/vad.py` takes plain numbers; the Gemini enum names and field names
are known here only.
"""

from __future__ import annotations

from flashlive.errors import InvalidArgument
from flashlive.perception.vad import VadSettings, check_ms

_START = {  # Gemini start-of-speech sensitivity → (probability threshold, voiced ms to commit)
    "START_SENSITIVITY_HIGH": (0.5, 64),
    "START_SENSITIVITY_LOW": (0.65, 192),
}
_END = {  # end-of-speech sensitivity → (probability below which a frame is silence, silence ms)
    "END_SENSITIVITY_HIGH": (0.35, 400),
    "END_SENSITIVITY_LOW": (0.25, 800),
}
_UNSPECIFIED = ("START_SENSITIVITY_UNSPECIFIED", "END_SENSITIVITY_UNSPECIFIED")


def vad_settings(
    start_sensitivity: str | None,
    end_sensitivity: str | None,
    prefix_padding_ms: int | None,
    silence_duration_ms: int | None,
) -> VadSettings:
    """Maps Gemini's `automaticActivityDetection`; unspecified sensitivities mean HIGH.

    `prefixPaddingMs` follows the API reference: "the required duration of detected speech
    before start-of-speech is committed", i.e. `start_ms`. The audio handed to ASR always keeps
    `prefix_padding_ms` of audio before the onset as well, so no reading clips words.
    """
    start_threshold, start_ms = _START[_sensitivity(start_sensitivity, "START", _START)]
    end_threshold, silence_ms = _END[_sensitivity(end_sensitivity, "END", _END)]
    if prefix_padding_ms is not None:
        check_ms("prefixPaddingMs", prefix_padding_ms)
        start_ms = prefix_padding_ms
    if silence_duration_ms is not None:
        check_ms("silenceDurationMs", silence_duration_ms)
        silence_ms = silence_duration_ms
    return VadSettings(
        start_threshold=start_threshold,
        end_threshold=end_threshold,
        start_ms=start_ms,
        silence_ms=silence_ms,
    )


def _sensitivity(value: str | None, kind: str, table: dict[str, tuple[float, int]]) -> str:
    if value is None or value in _UNSPECIFIED:
        return f"{kind}_SENSITIVITY_HIGH"
    if value not in table:
        choices = ", ".join(sorted(table))
        raise InvalidArgument(f"Unknown {kind.lower()} sensitivity {value!r}; expected {choices}.")
    return value
