"""The cachedContents resource: create, get, list, patch (ttl or expireTime) and delete."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from pydantic import BeforeValidator, Field, PlainSerializer

from flashlive.protocol.base import Duration, Wire
from flashlive.protocol.content import Content, Tool, ToolConfig

UPDATABLE_FIELDS = ("ttl", "expireTime")


def parse_timestamp(value: Any) -> datetime:
    """An RFC 3339 timestamp with its offset ("...Z" or "+02:00"), as an aware UTC datetime."""
    if isinstance(value, datetime):
        stamp = value
    elif isinstance(value, str):
        try:
            stamp = datetime.fromisoformat(value)
        except ValueError:
            raise ValueError(f"{value!r} is not an RFC 3339 timestamp") from None
    else:
        raise ValueError("a timestamp must be an RFC 3339 string")
    # A time without an offset is ambiguous (the client's local time or UTC?): refuse to guess.
    if stamp.tzinfo is None:
        raise ValueError(f"{value!s} needs a time zone offset, e.g. 2030-01-01T00:00:00Z")
    try:
        return stamp.astimezone(UTC)
    except OverflowError:  # year 1 or 9999 shifted past the calendar's edge
        raise ValueError(f"{value!s} is out of range") from None


def format_timestamp(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


Timestamp = Annotated[
    datetime, BeforeValidator(parse_timestamp), PlainSerializer(format_timestamp, return_type=str)
]


class CachedContentUsageMetadata(Wire):
    total_token_count: int


class CachedContent(Wire):
    """The resource. Clients write the prefix and its expiry; the server fills in the rest.

    `contents`, `systemInstruction`, `tools` and `toolConfig` are taken on create and, as in
    Gemini, not echoed back; `ttl` is input only (answers carry `expireTime`).
    """

    name: str | None = None
    display_name: str | None = None
    model: str | None = None
    contents: list[Content] | None = None
    system_instruction: Content | None = None
    tools: list[Tool] | None = None
    tool_config: ToolConfig | None = None
    create_time: Timestamp | None = None
    update_time: Timestamp | None = None
    expire_time: Timestamp | None = None
    ttl: Duration | None = None
    usage_metadata: CachedContentUsageMetadata | None = None


class CreateCachedContentRequest(Wire):
    """POST /cachedContents: what google-genai's caches.create sends (no output-only fields)."""

    model: str
    display_name: str | None = None
    contents: list[Content] = Field(default_factory=list)
    system_instruction: Content | None = None
    tools: list[Tool] | None = None
    tool_config: ToolConfig | None = None
    expire_time: Timestamp | None = None
    ttl: Duration | None = None

    def prefix(self) -> dict[str, Any]:
        """The cached part of the request, as wire JSON: what a generation puts before its own."""
        return self.model_dump(
            by_alias=True,
            exclude_none=True,
            mode="json",
            include={"contents", "system_instruction", "tools", "tool_config"},
        )


class ListCachedContentsResponse(Wire):
    cached_contents: list[CachedContent] = Field(default_factory=list)
    next_page_token: str | None = None


@dataclass(frozen=True)
class Expiration:
    """When a cache ends: after `ttl` from now, or at `expire_time`. Exactly one is set."""

    ttl: timedelta | None = None
    expire_time: datetime | None = None


def expiration_of(ttl: timedelta | None, expire_time: datetime | None) -> Expiration | None:
    """The expiration a request asks for; None when it names neither. Raises ValueError."""
    if ttl is not None and expire_time is not None:
        raise ValueError("give either ttl or expireTime, not both")
    if ttl is None and expire_time is None:
        return None
    return Expiration(ttl=ttl, expire_time=expire_time)


def expiration_update(body: CachedContent, update_mask: str | None) -> Expiration:
    """The new expiration a PATCH asks for. Raises ValueError for anything else it tries.

    google-genai sends no updateMask, only the changed field; other clients send the mask
    (`ttl`, `expireTime`, or the snake_case spelling). Without a mask, the fields present are
    the mask. `name` may be echoed back and is ignored.
    """
    present = body.model_dump(by_alias=True, exclude_none=True, exclude={"name"})
    if update_mask is None:
        fields = set(present)
    else:
        fields = {_camel(f.strip()) for f in update_mask.split(",") if f.strip()}
    refused = sorted(fields - set(UPDATABLE_FIELDS))
    if refused:
        raise ValueError(f"only ttl or expireTime can be updated, not {', '.join(refused)}")
    if not fields:
        raise ValueError("nothing to update: give ttl or expireTime")
    expiration = expiration_of(
        body.ttl if "ttl" in fields else None,
        body.expire_time if "expireTime" in fields else None,
    )
    if expiration is None:
        raise ValueError(f"updateMask names {', '.join(sorted(fields))} but the body has none")
    return expiration


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(w[:1].upper() + w[1:] for w in rest)
