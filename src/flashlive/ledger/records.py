"""One usage record per billable call: what was asked of which model, by whom, and how it went."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol

from flashlive.errors import InvalidArgument

ANONYMOUS = "anonymous"


def hash_key(api_key: str | None) -> str:
    """A stable, non-reversible name for a key: the ledger never stores keys themselves."""
    if api_key is None:
        return ANONYMOUS
    return hashlib.sha256(api_key.encode()).hexdigest()[:16]


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class UsageRecord:
    request_id: str  # equals the response's responseId, so a client can find its own calls
    time: datetime  # UTC
    key_hash: str
    model: str
    method: str  # generateContent, streamGenerateContent, countTokens, live.turn, ...
    input_tokens: dict[str, int] = field(default_factory=dict)  # by modality: TEXT, AUDIO, ...
    output_tokens: dict[str, int] = field(default_factory=dict)
    cached_tokens: int = 0  # part of the input tokens, billed at the cached rate
    cache_storage_token_hours: float = 0.0
    latency_s: float = 0.0
    status: int = 200

    @property
    def total_input(self) -> int:
        return sum(self.input_tokens.values())

    @property
    def total_output(self) -> int:
        return sum(self.output_tokens.values())


@dataclass(frozen=True)
class UsageRow:
    """One line of a summary: all records sharing a day, a model or a key."""

    group: str
    requests: int
    input_tokens: int
    output_tokens: int
    cached_tokens: int
    cost_usd: float

    def to_json(self) -> dict[str, str | int | float]:
        return {
            "group": self.group,
            "requests": self.requests,
            "inputTokens": self.input_tokens,
            "outputTokens": self.output_tokens,
            "cachedTokens": self.cached_tokens,
            "costUsd": round(self.cost_usd, 9),
        }


class UsageSink(Protocol):
    """Anything a finished call's record can be handed to (a ledger, or the app's recorder)."""

    async def record(self, rec: UsageRecord) -> None: ...


def parse_since(text: str) -> datetime:
    """`2025-01-31` (midnight UTC) or an ISO 8601 time (UTC unless it names a zone)."""
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise InvalidArgument(f"since must be a date or an ISO 8601 time, not {text!r}") from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
