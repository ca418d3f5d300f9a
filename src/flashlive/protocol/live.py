"""The Live API (BidiGenerateContent) messages, both directions.

Every WebSocket frame is one JSON object holding exactly one message kind. The official
Python SDK sends the top-level keys in snake_case (`realtime_input`) and the inner ones in
camelCase; both spellings are accepted everywhere, as the REST models do.
"""

from __future__ import annotations

from enum import StrEnum

from pydantic import Field, ValidationError, field_validator, model_validator

from flashlive.errors import invalid_from_validation
from flashlive.protocol.base import Wire
from flashlive.protocol.content import (
    Blob,
    Content,
    FunctionCall,
    FunctionResponse,
    SafetySetting,
    Tool,
    ToolConfig,
)
from flashlive.protocol.generate import GenerationConfig, ModalityTokenCount
from flashlive.protocol.wire_json import parse_wire_json


class ResponseModality(StrEnum):
    TEXT = "TEXT"
    AUDIO = "AUDIO"


class StartSensitivity(StrEnum):
    UNSPECIFIED = "START_SENSITIVITY_UNSPECIFIED"
    HIGH = "START_SENSITIVITY_HIGH"
    LOW = "START_SENSITIVITY_LOW"


class EndSensitivity(StrEnum):
    UNSPECIFIED = "END_SENSITIVITY_UNSPECIFIED"
    HIGH = "END_SENSITIVITY_HIGH"
    LOW = "END_SENSITIVITY_LOW"


class ActivityHandling(StrEnum):
    UNSPECIFIED = "ACTIVITY_HANDLING_UNSPECIFIED"
    START_OF_ACTIVITY_INTERRUPTS = "START_OF_ACTIVITY_INTERRUPTS"
    NO_INTERRUPTION = "NO_INTERRUPTION"


class TurnCoverage(StrEnum):
    UNSPECIFIED = "TURN_COVERAGE_UNSPECIFIED"
    TURN_INCLUDES_ONLY_ACTIVITY = "TURN_INCLUDES_ONLY_ACTIVITY"
    TURN_INCLUDES_ALL_INPUT = "TURN_INCLUDES_ALL_INPUT"
    TURN_INCLUDES_AUDIO_ACTIVITY_AND_ALL_VIDEO = "TURN_INCLUDES_AUDIO_ACTIVITY_AND_ALL_VIDEO"


class TranslationConfig(Wire):
    echo_target_language: bool | None = None
    target_language_code: str | None = None


class ProactivityConfig(Wire):
    proactive_audio: bool | None = None
    proactive_video: bool | None = None


class HistoryConfig(Wire):
    initial_history_in_client_content: bool | None = None


class TranscriptionMode(StrEnum):
    UNSPECIFIED = "MODE_UNSPECIFIED"
    VERBATIM = "VERBATIM"
    SMART = "SMART"


class LanguageHints(Wire):
    language_codes: list[str] | None = None


class LanguageAuto(Wire):
    """Deprecated by Gemini: detection is the default when no language codes are given."""


class LiveGenerationConfig(GenerationConfig):
    """generationConfig of a Live setup: REST's, plus spoken answers."""

    enable_affective_dialog: bool | None = None
    translation_config: TranslationConfig | None = None

    @field_validator("response_modalities")
    @classmethod
    def _text_only(cls, value: list[str] | None) -> list[str] | None:
        if value is None:
            return None
        if len(value) != 1:
            raise ValueError("responseModalities takes exactly one of TEXT or AUDIO")
        modality = value[0].upper()
        if modality not in ResponseModality.__members__:
            raise ValueError(f"response modality {value[0]!r} is not supported; use TEXT or AUDIO")
        return [modality]

    @property
    def modality(self) -> ResponseModality:
        # Gemini Live answers in audio unless told otherwise; our default model is a text model
        # first, so an unset modality means TEXT.
        if self.response_modalities:
            return ResponseModality(self.response_modalities[0])
        return ResponseModality.TEXT


class AutomaticActivityDetection(Wire):
    disabled: bool | None = None
    start_of_speech_sensitivity: StartSensitivity | None = None
    end_of_speech_sensitivity: EndSensitivity | None = None
    prefix_padding_ms: int | None = Field(default=None, ge=0, le=10_000)
    silence_duration_ms: int | None = Field(default=None, ge=0, le=10_000)


class RealtimeInputConfig(Wire):
    automatic_activity_detection: AutomaticActivityDetection | None = None
    activity_handling: ActivityHandling | None = None
    turn_coverage: TurnCoverage | None = None
    interim_transcript_timestamp_enabled: bool | None = None


class AudioTranscriptionConfig(Wire):
    """Transcripts of the user's or the model's speech: present means on."""

    language_codes: list[str] | None = None
    language_auto: LanguageAuto | None = None
    language_hints: LanguageHints | None = None
    custom_vocabulary: list[str] | None = None
    adaptation_phrases: list[str] | None = None
    word_timestamp: bool | None = None
    diarization: bool | None = None
    mode: TranscriptionMode | None = None
    source_text: str | None = None


class SessionResumptionConfig(Wire):
    handle: str | None = None
    transparent: bool | None = None


class SlidingWindow(Wire):
    target_tokens: int | None = Field(default=None, ge=0)


class ContextWindowCompression(Wire):
    trigger_tokens: int | None = Field(default=None, ge=0)
    sliding_window: SlidingWindow | None = None


class Setup(Wire):
    model: str
    generation_config: LiveGenerationConfig | None = None
    system_instruction: Content | None = None
    tools: list[Tool] | None = None
    tool_config: ToolConfig | None = None
    safety_settings: list[SafetySetting] | None = None
    realtime_input_config: RealtimeInputConfig | None = None
    session_resumption: SessionResumptionConfig | None = None
    context_window_compression: ContextWindowCompression | None = None
    input_audio_transcription: AudioTranscriptionConfig | None = None
    output_audio_transcription: AudioTranscriptionConfig | None = None
    proactivity: ProactivityConfig | None = None
    history_config: HistoryConfig | None = None
    labels: dict[str, str] | None = None
    # Our extension: the session's context begins with this cachedContents/{id}.
    cached_content: str | None = None


class ClientContent(Wire):
    turns: list[Content] | None = None
    turn_complete: bool | None = None


class ActivitySignal(Wire):
    """activityStart / activityEnd: an empty object."""


class RealtimeInput(Wire):
    audio: Blob | None = None
    video: Blob | None = None
    text: str | None = None
    activity_start: ActivitySignal | None = None
    activity_end: ActivitySignal | None = None
    audio_stream_end: bool | None = None
    media_chunks: list[Blob] | None = None

    @model_validator(mode="after")
    def _something(self) -> RealtimeInput:
        if all(getattr(self, name) is None for name in type(self).model_fields):
            raise ValueError("realtimeInput carries nothing")
        return self


class ToolResponse(Wire):
    function_responses: list[FunctionResponse] = Field(default_factory=list)


class ClientMessage(Wire):
    """One client frame: exactly one of its fields is set."""

    setup: Setup | None = None
    client_content: ClientContent | None = None
    realtime_input: RealtimeInput | None = None
    tool_response: ToolResponse | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> ClientMessage:
        given = [name for name in type(self).model_fields if getattr(self, name) is not None]
        if len(given) != 1:
            raise ValueError(
                "a message must hold exactly one of setup, clientContent, realtimeInput or "
                f"toolResponse; got {len(given)}"
            )
        return self

    @property
    def kind(self) -> str:
        for name in type(self).model_fields:
            if getattr(self, name) is not None:
                return name
        raise AssertionError("validated to hold one field")


def parse_client_message(raw: str | bytes) -> ClientMessage:
    """One client frame; InvalidArgument (its reason readable) when it is not a message."""
    try:
        return ClientMessage.model_validate(parse_wire_json(raw))
    except ValidationError as exc:
        raise invalid_from_validation(exc) from None


# --- server → client ---------------------------------------------------------------------------


class SetupComplete(Wire):
    session_id: str | None = None


class Transcription(Wire):
    text: str
    finished: bool | None = None


class TurnCompleteReason(StrEnum):
    MALFORMED_FUNCTION_CALL = "MALFORMED_FUNCTION_CALL"
    RESPONSE_REJECTED = "RESPONSE_REJECTED"
    NEED_MORE_INPUT = "NEED_MORE_INPUT"


class ServerContent(Wire):
    model_turn: Content | None = None
    generation_complete: bool | None = None
    turn_complete: bool | None = None
    interrupted: bool | None = None
    input_transcription: Transcription | None = None
    output_transcription: Transcription | None = None
    turn_complete_reason: TurnCompleteReason | None = None
    waiting_for_input: bool | None = None


class ToolCall(Wire):
    function_calls: list[FunctionCall]


class ToolCallCancellation(Wire):
    ids: list[str]


class LiveUsageMetadata(Wire):
    prompt_token_count: int
    cached_content_token_count: int | None = None
    response_token_count: int
    total_token_count: int
    prompt_tokens_details: list[ModalityTokenCount] | None = None
    response_tokens_details: list[ModalityTokenCount] | None = None


class GoAway(Wire):
    time_left: str


class SessionResumptionUpdate(Wire):
    new_handle: str | None = None
    resumable: bool | None = None
    last_consumed_client_message_index: int | None = None


class ServerMessage(Wire):
    setup_complete: SetupComplete | None = None
    server_content: ServerContent | None = None
    tool_call: ToolCall | None = None
    tool_call_cancellation: ToolCallCancellation | None = None
    usage_metadata: LiveUsageMetadata | None = None
    go_away: GoAway | None = None
    session_resumption_update: SessionResumptionUpdate | None = None

    def to_json(self) -> str:
        # setupComplete is `{}` on the wire: keep empty objects, drop unset fields.
        return self.model_dump_json(by_alias=True, exclude_none=True)
