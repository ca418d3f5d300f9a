"""The base model every wire message derives from: camelCase on the wire, closed by default."""

from __future__ import annotations

import base64
import re
from datetime import timedelta
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, PlainSerializer
from pydantic.alias_generators import to_camel

from flashlive.errors import InvalidArgument

# A protobuf int32 field: a larger number is refused (naming the field), as Gemini does.
Int32 = Annotated[int, Field(ge=-(2**31), le=2**31 - 1)]
# google.protobuf.Duration in JSON: seconds with up to nine fractional digits and an "s".
_DURATION = re.compile(r"(?P<seconds>-?\d+)(?P<fraction>\.\d{1,9})?s")
MAX_DURATION_S = 315_576_000_000  # ten thousand years: google.protobuf.Duration's bound


class Wire(BaseModel):
    """A closed wire message: unknown fields are rejected, as the Gemini API does."""

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=False
    )

    def dump(self) -> dict[str, Any]:
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")


class OpenWire(Wire):
    """A wire message we read only partly: fields we do not act on are accepted and ignored."""

    model_config = ConfigDict(extra="ignore")


def model_id(name: str) -> str:
    """A model's id: "models/x" and "x" name the same model."""
    return name.removeprefix("models/")


def blob_bytes(data: str, where: str) -> bytes:
    """The bytes of a base64 field named `where`; InvalidArgument naming it when not base64."""
    try:
        return decode_base64(data)
    except ValueError:
        raise InvalidArgument(f"{where} is not valid base64") from None


def decode_base64(data: str) -> bytes:
    """Bytes of a base64 field: the SDKs send either alphabet (Python's is URL-safe).

    Raises ValueError when `data` is not base64 in either alphabet.
    """
    if "-" in data or "_" in data:
        data = data.replace("-", "+").replace("_", "/")
    data += "=" * (-len(data) % 4)
    return base64.b64decode(data, validate=True)


def parse_duration(value: Any) -> timedelta:
    """A protobuf JSON duration such as "3600s" or "1.5s"."""
    match = _DURATION.fullmatch(value) if isinstance(value, str) else None
    if match is None:
        raise ValueError(f"{value!r} is not a duration; write seconds with an s, e.g. '3600s'")
    seconds = abs(int(match["seconds"]))
    if seconds > MAX_DURATION_S:
        raise ValueError(f"{value!r} is longer than protobuf's {MAX_DURATION_S} seconds")
    micros = int(((match["fraction"] or ".")[1:] + "000000")[:6])
    delta = timedelta(seconds=seconds, microseconds=micros)
    # The sign goes on the whole: "-0.5s" is minus half a second.
    return -delta if value.startswith("-") else delta


def format_duration(value: timedelta) -> str:
    return f"{value.total_seconds():g}s"


Duration = Annotated[
    timedelta, BeforeValidator(parse_duration), PlainSerializer(format_duration, return_type=str)
]
