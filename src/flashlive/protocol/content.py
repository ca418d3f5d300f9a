"""Contents, parts, tools and schemas: the vocabulary shared by REST and Live."""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from pydantic import Field, field_validator, model_validator

from flashlive.protocol.base import Duration, OpenWire, Wire

MAX_MEDIA_TOKENS = 65_536  # tokens one media part may be asked to count as


class MediaResolution(StrEnum):
    """How finely media is looked at, and what it counts as (request-wide or for one part)."""

    UNSPECIFIED = "MEDIA_RESOLUTION_UNSPECIFIED"
    LOW = "MEDIA_RESOLUTION_LOW"
    MEDIUM = "MEDIA_RESOLUTION_MEDIUM"
    HIGH = "MEDIA_RESOLUTION_HIGH"
    ULTRA_HIGH = "MEDIA_RESOLUTION_ULTRA_HIGH"


class PartMediaResolution(Wire):
    level: MediaResolution | None = None
    num_tokens: int | None = Field(default=None, ge=1, le=MAX_MEDIA_TOKENS)


class ContentLayer(StrEnum):
    UNSPECIFIED = "CONTENT_LAYER_UNSPECIFIED"
    FRAMES = "FRAMES"
    AUDIO = "AUDIO"
    TRANSCRIPT = "TRANSCRIPT"


class VideoMetadata(Wire):
    """A video part's clip (offsets from its start), frame rate and the layers looked at."""

    start_offset: Duration | None = None
    end_offset: Duration | None = None
    fps: float | None = Field(default=None, gt=0.0, le=24.0)
    content_layers: list[ContentLayer] | None = None

    @model_validator(mode="after")
    def _ordered(self) -> VideoMetadata:
        start, end = self.start_offset, self.end_offset
        for name, offset in (("startOffset", start), ("endOffset", end)):
            if offset is not None and offset.total_seconds() < 0:
                raise ValueError(f"{name} must not be negative")
        if start is not None and end is not None and end <= start:
            raise ValueError("endOffset must come after startOffset")
        return self


class Blob(Wire):
    mime_type: str
    data: str  # base64, validated where it is used


class FileData(Wire):
    mime_type: str | None = None
    file_uri: str


class FunctionCall(Wire):
    id: str | None = None
    name: str
    args: dict[str, Any] = Field(default_factory=dict)


class FunctionResponseScheduling(StrEnum):
    UNSPECIFIED = "SCHEDULING_UNSPECIFIED"
    SILENT = "SILENT"
    WHEN_IDLE = "WHEN_IDLE"
    INTERRUPT = "INTERRUPT"


class FunctionResponse(Wire):
    id: str | None = None
    name: str
    response: dict[str, Any] = Field(default_factory=dict)
    will_continue: bool | None = None
    scheduling: FunctionResponseScheduling | None = None


_PART_DATA_FIELDS = (
    "text",
    "inline_data",
    "file_data",
    "function_call",
    "function_response",
    "executable_code",
    "code_execution_result",
)


class Part(Wire):
    text: str | None = None
    inline_data: Blob | None = None
    file_data: FileData | None = None
    function_call: FunctionCall | None = None
    function_response: FunctionResponse | None = None
    executable_code: dict[str, Any] | None = None
    code_execution_result: dict[str, Any] | None = None
    thought: bool | None = None
    thought_signature: str | None = None
    video_metadata: VideoMetadata | None = None
    part_metadata: dict[str, Any] | None = None
    media_resolution: PartMediaResolution | None = None

    @model_validator(mode="after")
    def _exactly_one_data_field(self) -> Part:
        present = [name for name in _PART_DATA_FIELDS if getattr(self, name) is not None]
        if len(present) != 1:
            raise ValueError(
                "a part must hold exactly one of text, inlineData, fileData, functionCall, "
                f"functionResponse, executableCode, codeExecutionResult (got {len(present)})"
            )
        return self

    @property
    def kind(self) -> str:
        for name in _PART_DATA_FIELDS:
            if getattr(self, name) is not None:
                return name
        return "empty"


class Role(StrEnum):
    USER = "user"
    MODEL = "model"
    FUNCTION = "function"  # older clients send function responses with this role


class Content(Wire):
    role: Role | None = None
    parts: list[Part] = Field(default_factory=list)


class SchemaType(StrEnum):
    TYPE_UNSPECIFIED = "TYPE_UNSPECIFIED"
    STRING = "STRING"
    NUMBER = "NUMBER"
    INTEGER = "INTEGER"
    BOOLEAN = "BOOLEAN"
    ARRAY = "ARRAY"
    OBJECT = "OBJECT"
    NULL = "NULL"


class Schema(OpenWire):
    """The OpenAPI subset Gemini uses for responseSchema and function parameters."""

    type: SchemaType | None = None
    format: str | None = None
    title: str | None = None
    description: str | None = None
    nullable: bool | None = None
    enum: list[str] | None = None
    items: Schema | None = None
    min_items: int | str | None = None
    max_items: int | str | None = None
    properties: dict[str, Schema] | None = None
    property_ordering: list[str] | None = None
    required: list[str] | None = None
    min_properties: int | str | None = None
    max_properties: int | str | None = None
    min_length: int | str | None = None
    max_length: int | str | None = None
    pattern: str | None = None
    minimum: float | None = None
    maximum: float | None = None
    any_of: list[Schema] | None = None
    default: Any = None

    @field_validator("type", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value


class Behavior(StrEnum):
    UNSPECIFIED = "UNSPECIFIED"
    BLOCKING = "BLOCKING"
    NON_BLOCKING = "NON_BLOCKING"


class FunctionDeclaration(Wire):
    name: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_.\-]{0,63}$")
    description: str | None = None
    parameters: Schema | None = None
    parameters_json_schema: dict[str, Any] | None = None
    response: Schema | None = None
    response_json_schema: dict[str, Any] | None = None
    behavior: Behavior | None = None


class Tool(Wire):
    function_declarations: list[FunctionDeclaration] | None = None
    google_search: dict[str, Any] | None = None
    google_search_retrieval: dict[str, Any] | None = None
    retrieval: dict[str, Any] | None = None
    code_execution: dict[str, Any] | None = None
    url_context: dict[str, Any] | None = None
    computer_use: dict[str, Any] | None = None
    file_search: dict[str, Any] | None = None
    google_maps: dict[str, Any] | None = None


class FunctionCallingMode(StrEnum):
    MODE_UNSPECIFIED = "MODE_UNSPECIFIED"
    AUTO = "AUTO"
    ANY = "ANY"
    NONE = "NONE"
    VALIDATED = "VALIDATED"


class FunctionCallingConfig(Wire):
    mode: FunctionCallingMode | None = None
    allowed_function_names: list[str] | None = None
    stream_function_call_arguments: bool | None = None


class ToolConfig(Wire):
    function_calling_config: FunctionCallingConfig | None = None
    retrieval_config: dict[str, Any] | None = None
    include_server_side_tool_invocations: bool | None = None


class HarmCategory(StrEnum):
    HARM_CATEGORY_UNSPECIFIED = "HARM_CATEGORY_UNSPECIFIED"
    HARM_CATEGORY_HARASSMENT = "HARM_CATEGORY_HARASSMENT"
    HARM_CATEGORY_HATE_SPEECH = "HARM_CATEGORY_HATE_SPEECH"
    HARM_CATEGORY_SEXUALLY_EXPLICIT = "HARM_CATEGORY_SEXUALLY_EXPLICIT"
    HARM_CATEGORY_DANGEROUS_CONTENT = "HARM_CATEGORY_DANGEROUS_CONTENT"
    HARM_CATEGORY_CIVIC_INTEGRITY = "HARM_CATEGORY_CIVIC_INTEGRITY"
    HARM_CATEGORY_IMAGE_HATE = "HARM_CATEGORY_IMAGE_HATE"
    HARM_CATEGORY_IMAGE_DANGEROUS_CONTENT = "HARM_CATEGORY_IMAGE_DANGEROUS_CONTENT"
    HARM_CATEGORY_IMAGE_HARASSMENT = "HARM_CATEGORY_IMAGE_HARASSMENT"
    HARM_CATEGORY_IMAGE_SEXUALLY_EXPLICIT = "HARM_CATEGORY_IMAGE_SEXUALLY_EXPLICIT"
    HARM_CATEGORY_JAILBREAK = "HARM_CATEGORY_JAILBREAK"


class HarmBlockThreshold(StrEnum):
    HARM_BLOCK_THRESHOLD_UNSPECIFIED = "HARM_BLOCK_THRESHOLD_UNSPECIFIED"
    BLOCK_LOW_AND_ABOVE = "BLOCK_LOW_AND_ABOVE"
    BLOCK_MEDIUM_AND_ABOVE = "BLOCK_MEDIUM_AND_ABOVE"
    BLOCK_ONLY_HIGH = "BLOCK_ONLY_HIGH"
    BLOCK_NONE = "BLOCK_NONE"
    OFF = "OFF"


class SafetySetting(Wire):
    category: HarmCategory
    threshold: HarmBlockThreshold
    method: str | None = None
