"""Request bodies: read within a size limit, parsed as the wire model the route takes."""

from __future__ import annotations

import asyncio
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from starlette.requests import Request

from flashlive.errors import InvalidArgument, PayloadTooLarge, invalid_from_validation
from flashlive.protocol.decisions import first_refusal
from flashlive.protocol.wire_json import parse_wire_json

W = TypeVar("W", bound=BaseModel)

INLINE_PARSE_BYTES = 64 * 1024  # larger bodies are parsed off the event loop


async def read_body(request: Request, model: type[W], max_bytes: int) -> W:
    """The request's JSON body as `model`: at most `max_bytes`, every field checked, refusals
    (fields the server will not act on) named."""
    declared = request.headers.get("content-length")
    if declared is not None and _is_count(declared) and int(declared) > max_bytes:
        raise PayloadTooLarge(
            f"request body of {declared} bytes exceeds the {max_bytes}-byte limit"
        )
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > max_bytes:
            raise PayloadTooLarge(f"request body exceeds the {max_bytes}-byte limit")
    if len(body) <= INLINE_PARSE_BYTES:
        return validated_body(body, model)
    # Parsing and checking megabytes takes a while: other requests go on meanwhile.
    return await asyncio.to_thread(validated_body, body, model)


def _is_count(text: str) -> bool:
    return text.isascii() and text.isdigit()  # str.isdigit() alone takes "¹²³", int() does not


def validated_body(body: bytes | bytearray, model: type[W]) -> W:
    """`body` parsed as a `model`, or InvalidArgument saying what is wrong with it."""
    data: Any = parse_wire_json(body or b"{}")
    if not isinstance(data, dict):
        raise InvalidArgument("Invalid JSON payload received. The body must be a JSON object.")
    try:
        parsed = model.model_validate(data)
    except ValidationError as exc:
        raise invalid_from_validation(exc) from None
    if (refusal := first_refusal(parsed)) is not None:
        raise InvalidArgument(refusal)
    return parsed
