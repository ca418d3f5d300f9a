"""cachedContents wire models: durations, timestamps, what a PATCH may change."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError

from flashlive.protocol.base import format_duration, parse_duration
from flashlive.protocol.caches import (
    CachedContent,
    CachedContentUsageMetadata,
    CreateCachedContentRequest,
    expiration_update,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("3600s", timedelta(hours=1)),
        ("1.5s", timedelta(seconds=1.5)),
        ("0.000001s", timedelta(microseconds=1)),
        ("0.000000001s", timedelta(0)),  # nanoseconds below our resolution
        ("-0.5s", timedelta(seconds=-0.5)),
    ],
)
def test_durations(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["3600", "1h", "s", "1.5.5s", "1.0000000001s", "9" * 20 + "s"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


def test_duration_round_trips() -> None:
    assert format_duration(parse_duration("1.5s")) == "1.5s"


def test_create_takes_what_the_sdk_sends() -> None:
    body = CreateCachedContentRequest.model_validate(
        {
            "model": "models/gemma-3-270m",
            "displayName": "docs",
            "contents": [{"role": "user", "parts": [{"text": "hello"}]}],
            "systemInstruction": {"parts": [{"text": "be brief"}]},
            "tools": [{"functionDeclarations": [{"name": "f"}]}],
            "toolConfig": {"functionCallingConfig": {"mode": "AUTO"}},
            "ttl": "300s",
        }
    )
    assert body.ttl == timedelta(seconds=300)
    assert set(body.prefix()) == {"contents", "systemInstruction", "tools", "toolConfig"}


@pytest.mark.parametrize(
    "extra",
    [
        {"createTime": "2030-01-01T00:00:00Z"},  # output only
        {"kmsKeyName": "k"},  # Vertex only
        {"ttl": "300"},
        {"expireTime": "2030-01-01T00:00:00"},  # no offset: local time or UTC?
        {"expireTime": "tomorrow"},
        {"expireTime": 1893456000},
    ],
)
def test_create_refuses(extra: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        CreateCachedContentRequest.model_validate({"model": "models/m", **extra})


def test_timestamps_are_utc_with_z() -> None:
    body = CreateCachedContentRequest.model_validate(
        {"model": "m", "expireTime": "2030-01-01T02:00:00.123456789+02:00"}
    )
    assert body.expire_time == datetime(2030, 1, 1, 0, 0, 0, 123456, tzinfo=UTC)
    resource = CachedContent(
        name="cachedContents/x",
        expire_time=body.expire_time,
        usage_metadata=CachedContentUsageMetadata(total_token_count=7),
    )
    assert resource.dump() == {
        "name": "cachedContents/x",
        "expireTime": "2030-01-01T00:00:00.123456Z",
        "usageMetadata": {"totalTokenCount": 7},
    }


def patch(body: Mapping[str, object], mask: str | None = None) -> tuple[object, object]:
    update = expiration_update(CachedContent.model_validate(body), mask)
    return update.ttl, update.expire_time


def test_patch_as_the_sdk_sends_it_without_a_mask() -> None:
    assert patch({"ttl": "60s"}) == (timedelta(seconds=60), None)
    at = datetime(2030, 1, 1, tzinfo=UTC)
    assert patch({"expireTime": "2030-01-01T00:00:00Z"}) == (None, at)


def test_patch_with_a_mask_takes_only_the_masked_field() -> None:
    body = {"name": "cachedContents/x", "ttl": "60s", "displayName": "ignored"}
    assert patch(body, "ttl") == (timedelta(seconds=60), None)
    at = datetime(2030, 1, 1, tzinfo=UTC)
    assert patch({"expireTime": "2030-01-01T00:00:00Z"}, "expire_time") == (None, at)


@pytest.mark.parametrize(
    ("body", "mask", "message"),
    [
        ({"displayName": "new"}, None, "not displayName"),
        ({"ttl": "60s"}, "ttl,model", "not model"),
        ({}, None, "nothing to update"),
        ({"ttl": "60s"}, "expireTime", "the body has none"),
        ({"ttl": "60s", "expireTime": "2030-01-01T00:00:00Z"}, None, "not both"),
    ],
)
def test_patch_refuses(body: dict[str, object], mask: str | None, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        patch(body, mask)
