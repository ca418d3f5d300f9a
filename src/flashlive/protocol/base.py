"""The base model every wire message derives from: camelCase on the wire, closed by default."""

from __future__ import annotations

import base64
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

# A protobuf int32 field: a larger number is refused (naming the field), as Gemini does.
Int32 = Annotated[int, Field(ge=-(2**31), le=2**31 - 1)]


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


def decode_base64(data: str) -> bytes:
    """Bytes of a base64 field: the SDKs send either alphabet (Python's is URL-safe).

    Raises ValueError when `data` is not base64 in either alphabet.
    """
    if "-" in data or "_" in data:
        data = data.replace("-", "+").replace("_", "/")
    data += "=" * (-len(data) % 4)
    return base64.b64decode(data, validate=True)
