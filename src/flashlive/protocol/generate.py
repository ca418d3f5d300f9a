"""generateContent / streamGenerateContent / countTokens request and response models."""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from pydantic import Field, field_validator

from flashlive.protocol.base import Int32, Wire
from flashlive.protocol.content import (
    Content,
    MediaResolution,
    SafetySetting,
    Schema,
    Tool,
    ToolConfig,
)

MAX_STOP_SEQUENCES = 5


class ThinkingLevel(StrEnum):
    UNSPECIFIED = "THINKING_LEVEL_UNSPECIFIED"
    MINIMAL = "MINIMAL"
    LOW = "LOW"
    MEDIUM = "MEDIUM"
    HIGH = "HIGH"
    XHIGH = "XHIGH"


class ThinkingConfig(Wire):
    include_thoughts: bool | None = None
    thinking_budget: int | None = Field(default=None, ge=-1)  # -1: automatic, 0: none
    thinking_level: ThinkingLevel | None = None


class ImageConfig(Wire):
    """How generated images should look; answers here hold none."""

    aspect_ratio: str | None = None
    image_size: str | None = None
    person_generation: str | None = None
    prominent_people: str | None = None
    output_mime_type: str | None = None
    output_compression_quality: int | None = Field(default=None, ge=0, le=100)
    image_output_options: dict[str, Any] | None = None


class SpeechConfig(Wire):
    voice_config: dict[str, Any] | None = None
    language_code: str | None = None
    multi_speaker_voice_config: dict[str, Any] | None = None


class ServiceTier(StrEnum):
    UNSPECIFIED = "unspecified"
    FLEX = "flex"
    STANDARD = "standard"
    PRIORITY = "priority"


class GenerationConfig(Wire):
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, ge=0.0, le=1.0)
    top_k: Int32 | None = Field(default=None, ge=1)
    candidate_count: Int32 | None = Field(default=None, ge=1)
    max_output_tokens: Int32 | None = Field(default=None, ge=1)
    stop_sequences: list[str] | None = None
    seed: Int32 | None = None
    presence_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)
    frequency_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)
    response_mime_type: str | None = None
    response_schema: Schema | None = None
    response_json_schema: dict[str, Any] | None = None
    response_logprobs: bool | None = None
    logprobs: Int32 | None = None
    response_modalities: list[str] | None = None
    speech_config: SpeechConfig | None = None
    thinking_config: ThinkingConfig | None = None
    media_resolution: MediaResolution | None = None
    image_config: ImageConfig | None = None
    audio_timestamp: bool | None = None
    enable_enhanced_civic_answers: bool | None = None

    @field_validator("candidate_count")
    @classmethod
    def _one_candidate(cls, value: int | None) -> int | None:
        if value is not None and value != 1:
            raise ValueError("only candidateCount 1 is supported")
        return value

    @field_validator("stop_sequences")
    @classmethod
    def _stop_sequences(cls, value: list[str] | None) -> list[str] | None:
        if value is None:
            return None
        if len(value) > MAX_STOP_SEQUENCES:
            raise ValueError(f"at most {MAX_STOP_SEQUENCES} stop sequences are allowed")
        if any(not s for s in value):
            raise ValueError("stop sequences must not be empty")
        return value

    @field_validator("response_modalities")
    @classmethod
    def _text_only(cls, value: list[str] | None) -> list[str] | None:
        if value and any(m.upper() != "TEXT" for m in value):
            raise ValueError("only the TEXT response modality is supported on this endpoint")
        return value


class GenerateContentRequest(Wire):
    model: str | None = None
    contents: list[Content] = Field(default_factory=list)
    system_instruction: Content | None = None
    tools: list[Tool] | None = None
    tool_config: ToolConfig | None = None
    safety_settings: list[SafetySetting] | None = None
    generation_config: GenerationConfig | None = None
    cached_content: str | None = None
    labels: dict[str, str] | None = None
    service_tier: ServiceTier | None = None
    store: bool | None = None

    @field_validator("service_tier", mode="before")
    @classmethod
    def _lower(cls, value: Any) -> Any:
        return value.lower() if isinstance(value, str) else value  # the SDK's enum ignores case


class CountTokensRequest(Wire):
    contents: list[Content] | None = None
    generate_content_request: GenerateContentRequest | None = None


class FinishReason(StrEnum):
    STOP = "STOP"
    MAX_TOKENS = "MAX_TOKENS"
    SAFETY = "SAFETY"
    OTHER = "OTHER"
    MALFORMED_FUNCTION_CALL = "MALFORMED_FUNCTION_CALL"


class Modality(StrEnum):
    TEXT = "TEXT"
    IMAGE = "IMAGE"
    AUDIO = "AUDIO"
    VIDEO = "VIDEO"
    DOCUMENT = "DOCUMENT"


class ModalityTokenCount(Wire):
    modality: Modality
    token_count: int


class UsageMetadata(Wire):
    prompt_token_count: int
    candidates_token_count: int | None = None
    total_token_count: int
    cached_content_token_count: int | None = None
    prompt_tokens_details: list[ModalityTokenCount] | None = None
    candidates_tokens_details: list[ModalityTokenCount] | None = None


class Candidate(Wire):
    content: Content
    finish_reason: FinishReason | None = None
    index: int = 0


class GenerateContentResponse(Wire):
    candidates: list[Candidate]
    usage_metadata: UsageMetadata | None = None
    model_version: str
    response_id: str


class CountTokensResponse(Wire):
    total_tokens: int
    prompt_tokens_details: list[ModalityTokenCount] | None = None


class Model(Wire):
    name: str
    base_model_id: str
    version: str
    display_name: str
    description: str
    input_token_limit: int
    output_token_limit: int
    supported_generation_methods: list[str]
    temperature: float
    max_temperature: float
    top_p: float
    top_k: int


class ListModelsResponse(Wire):
    models: list[Model]
    next_page_token: str | None = None
