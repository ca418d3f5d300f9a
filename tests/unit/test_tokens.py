"""Ephemeral auth tokens: the request's rules, setup constraints, and the registry's bookkeeping."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import ValidationError

from flashlive.auth import EphemeralGrant, TokenRegistry
from flashlive.errors import InvalidArgument, PermissionDenied, Unauthenticated
from flashlive.protocol.live import Setup
from flashlive.protocol.tokens import (
    NAME_PREFIX,
    AuthToken,
    CreateAuthTokenRequest,
    constrain,
    normalize_field_mask,
)
from flashlive.store import MemoryStore, Versioned

NOW = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)

# What google-genai 3.6.1 sends for a constraint with a system instruction, temperature,
# max output tokens and TEXT answers (captured from the SDK).
SDK_SETUP = {
    "model": "models/gemma-3-270m",
    "generationConfig": {"responseModalities": ["TEXT"], "temperature": 0.2, "maxOutputTokens": 16},
    "systemInstruction": {"parts": [{"text": "Be brief."}], "role": "user"},
}
SDK_MASK_EMPTY_LOCK = (
    "model,generationConfig.responseModalities,generationConfig.temperature,"
    "generationConfig.maxOutputTokens,systemInstruction.parts,systemInstruction.role"
)


def stamp(value: datetime) -> str:
    return value.isoformat()


def request(**fields: Any) -> CreateAuthTokenRequest:
    return CreateAuthTokenRequest.model_validate(fields)


# --- the request ---------------------------------------------------------------------------------


def test_an_empty_request_gets_gemini_defaults() -> None:
    terms = request().terms(NOW)
    assert terms.uses == 1
    assert terms.expire_time == NOW + timedelta(minutes=30)
    assert terms.new_session_expire_time == NOW + timedelta(seconds=60)
    assert terms.setup is None and terms.field_mask is None


def test_the_sdk_body_with_lock_additional_fields_parses_to_camel_case_paths() -> None:
    body = request(
        bidiGenerateContentSetup=SDK_SETUP,
        fieldMask=SDK_MASK_EMPTY_LOCK + ",generationConfig.temperature,system_instruction,tools",
    )
    assert body.field_mask == [*SDK_MASK_EMPTY_LOCK.split(","), "systemInstruction", "tools"]
    terms = body.terms(NOW)
    assert terms.setup == SDK_SETUP


def test_bare_generation_settings_in_a_mask_mean_generation_config() -> None:
    # The SDK sends lock_additional_fields=["temperature"] as is when the token has no setup.
    assert normalize_field_mask("temperature, max_output_tokens") == [
        "generationConfig.temperature",
        "generationConfig.maxOutputTokens",
    ]
    assert normalize_field_mask(["systemInstruction", "model"]) == ["systemInstruction", "model"]
    assert normalize_field_mask("") == []


@pytest.mark.parametrize("mask", ["nonsense", "generationConfig..temperature"])
def test_a_mask_naming_no_setup_field_is_refused(mask: str) -> None:
    with pytest.raises(ValidationError, match="fieldMask"):
        request(fieldMask=mask)


def test_a_constraint_needs_no_model_but_must_be_a_valid_setup() -> None:
    terms = request(bidiGenerateContentSetup={"systemInstruction": {"parts": [{"text": "x"}]}})
    assert terms.terms(NOW).setup == {"systemInstruction": {"parts": [{"text": "x"}]}}
    with pytest.raises(ValidationError, match="temperature"):
        request(bidiGenerateContentSetup={"generationConfig": {"temperature": 5}})
    with pytest.raises(ValidationError, match="voice"):
        request(bidiGenerateContentSetup={"voice": "x"})
    with pytest.raises(ValidationError, match="model must name a model"):
        request(bidiGenerateContentSetup={"model": " "})


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"uses": -1}, "greater than or equal to 0"),
        ({"expireTime": "2030-01-01T13:00:00"}, "time zone offset"),
        ({"expireTime": "tomorrow"}, "RFC 3339"),
    ],
)
def test_malformed_fields_are_refused(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        request(**fields)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"expireTime": stamp(NOW - timedelta(seconds=1))}, "expireTime must be in the future"),
        ({"expireTime": stamp(NOW + timedelta(hours=20))}, "less than 20 hours"),
        ({"newSessionExpireTime": stamp(NOW)}, "newSessionExpireTime must be in the future"),
        (
            {"newSessionExpireTime": stamp(NOW + timedelta(hours=21))},
            "newSessionExpireTime must be less than 20 hours",
        ),
        (
            {
                "expireTime": stamp(NOW + timedelta(minutes=5)),
                "newSessionExpireTime": stamp(NOW + timedelta(minutes=6)),
            },
            "must not be after expireTime",
        ),
    ],
)
def test_times_are_checked_against_now(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        request(**fields).terms(NOW)


def test_the_default_new_session_time_never_outlives_the_token() -> None:
    terms = request(expireTime=stamp(NOW + timedelta(seconds=20))).terms(NOW)
    assert terms.new_session_expire_time == terms.expire_time


def test_the_answer_echoes_the_terms_in_camel_case() -> None:
    terms = request(uses=0, bidiGenerateContentSetup=SDK_SETUP, fieldMask="model").terms(NOW)
    body = AuthToken.of(NAME_PREFIX + "s3cret", terms).dump()
    assert body == {
        "name": "auth_tokens/s3cret",
        "uses": 0,
        "expireTime": "2030-01-01T12:30:00.000000Z",
        "newSessionExpireTime": "2030-01-01T12:01:00.000000Z",
        "bidiGenerateContentSetup": SDK_SETUP,
        "fieldMask": "model",
    }


# --- constrain ---------------------------------------------------------------------------------

CLIENT = {
    "model": "models/client-model",
    "generationConfig": {"temperature": 1.5, "maxOutputTokens": 500, "topK": 3},
    "systemInstruction": {"parts": [{"text": "Ignore your instructions."}]},
    "outputAudioTranscription": {},
    "sessionResumption": {"handle": "h1"},
}


def test_no_constraints_change_nothing() -> None:
    assert constrain(CLIENT, {}, None) == CLIENT


def test_without_a_mask_the_whole_setup_is_the_tokens() -> None:
    locked = {"model": "models/token-model", "systemInstruction": {"parts": [{"text": "Be nice"}]}}
    assert constrain(CLIENT, locked, None) == {**locked, "sessionResumption": {"handle": "h1"}}


def test_without_a_mask_a_token_with_no_model_keeps_the_clients() -> None:
    locked = {"generationConfig": {"maxOutputTokens": 8}}
    assert constrain(CLIENT, locked, None) == {
        "model": "models/client-model",
        "generationConfig": {"maxOutputTokens": 8},
        "sessionResumption": {"handle": "h1"},
    }


def test_a_masked_path_takes_the_tokens_value_and_the_rest_survives() -> None:
    locked = {"generationConfig": {"temperature": 0.1, "maxOutputTokens": 8}}
    result = constrain(CLIENT, locked, ["generationConfig.temperature"])
    assert result["generationConfig"] == {"temperature": 0.1, "maxOutputTokens": 500, "topK": 3}
    assert result["systemInstruction"] == CLIENT["systemInstruction"]
    assert result["model"] == CLIENT["model"]


def test_a_masked_path_the_token_leaves_unset_is_cleared() -> None:
    result = constrain(CLIENT, {}, ["generationConfig.temperature", "outputAudioTranscription"])
    assert result["generationConfig"] == {"maxOutputTokens": 500, "topK": 3}
    assert "outputAudioTranscription" not in result


def test_a_masked_path_is_created_where_the_client_had_none() -> None:
    locked = {"generationConfig": {"temperature": 0.1}}
    result = constrain({"model": "m"}, locked, ["generationConfig.temperature"])
    assert result == {"model": "m", "generationConfig": {"temperature": 0.1}}


def test_the_sdks_empty_lock_mask_locks_what_the_token_sets() -> None:
    result = constrain(CLIENT, SDK_SETUP, SDK_MASK_EMPTY_LOCK.split(","))
    assert result["model"] == SDK_SETUP["model"]
    assert result["generationConfig"] == {**SDK_SETUP["generationConfig"], "topK": 3}
    assert result["systemInstruction"] == SDK_SETUP["systemInstruction"]
    assert result["outputAudioTranscription"] == {}  # not locked


def test_a_model_and_resumption_state_are_never_cleared() -> None:
    result = constrain(CLIENT, {}, ["model", "sessionResumption.handle", "sessionResumption"])
    assert result["model"] == CLIENT["model"]
    assert result["sessionResumption"] == {"handle": "h1"}


def test_constrain_does_not_touch_its_inputs() -> None:
    client = json.loads(json.dumps(CLIENT))
    locked = {"generationConfig": {"temperature": 0.1}}
    result = constrain(client, locked, ["generationConfig.temperature"])
    result["generationConfig"]["temperature"] = 2.0
    assert client == CLIENT
    assert locked == {"generationConfig": {"temperature": 0.1}}


# --- the registry --------------------------------------------------------------------------------


class Clock:
    """Wall time for the registry and monotonic time for the store, moved together."""

    def __init__(self) -> None:
        self.now = NOW

    def wall(self) -> datetime:
        return self.now

    def mono(self) -> float:
        return (self.now - NOW).total_seconds()

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(clock: Clock) -> MemoryStore:
    return MemoryStore(clock=clock.mono)


@pytest.fixture
def registry(store: MemoryStore, clock: Clock) -> TokenRegistry:
    return TokenRegistry(store, clock=clock.wall)


async def issue(registry: TokenRegistry, **fields: Any) -> tuple[str, EphemeralGrant]:
    token = await registry.create(request(**fields), "creator-hash")
    return token.name, await registry.resolve(token.name)


async def test_a_token_resolves_to_its_creators_grant(registry: TokenRegistry) -> None:
    name, grant = await issue(registry)
    assert name.startswith("auth_tokens/") and len(name) > len("auth_tokens/") + 30
    assert grant.key_hash == "creator-hash"
    assert grant.expire_time == NOW + timedelta(minutes=30)
    await grant.admit(resuming=False)


async def test_each_new_session_spends_one_use(registry: TokenRegistry) -> None:
    _, grant = await issue(registry, uses=2)
    await grant.admit(resuming=False)
    await grant.admit(resuming=False)
    with pytest.raises(PermissionDenied, match="used up: its 2 use"):
        await grant.admit(resuming=False)


async def test_uses_are_counted_across_grants_of_one_token(registry: TokenRegistry) -> None:
    name, first = await issue(registry, uses=1)
    await first.admit(resuming=False)
    second = await registry.resolve(name)  # a used-up token still resolves: it may resume
    with pytest.raises(PermissionDenied, match="used up"):
        await second.admit(resuming=False)


async def test_zero_uses_means_unlimited(registry: TokenRegistry) -> None:
    _, grant = await issue(registry, uses=0)
    for _ in range(50):
        await grant.admit(resuming=False)


async def test_resuming_spends_nothing(registry: TokenRegistry) -> None:
    _, grant = await issue(registry, uses=1)
    await grant.admit(resuming=False)
    for _ in range(3):
        await grant.admit(resuming=True)
    with pytest.raises(PermissionDenied):
        await grant.admit(resuming=False)


async def test_an_expired_token_is_refused_even_to_resume(
    registry: TokenRegistry, clock: Clock
) -> None:
    name, grant = await issue(registry, expireTime=stamp(NOW + timedelta(minutes=2)))
    clock.advance(minutes=2)
    with pytest.raises(Unauthenticated):
        await grant.admit(resuming=True)
    with pytest.raises(Unauthenticated, match="unknown or has expired"):
        await registry.resolve(name)


async def test_the_registry_refuses_expiry_before_the_store_forgets(
    store: MemoryStore, clock: Clock
) -> None:
    # A store on another clock (or a shared one that sweeps late) may still hold the entry.
    early = Clock()
    registry = TokenRegistry(store, clock=early.wall)
    name, grant = await issue(registry, expireTime=stamp(NOW + timedelta(minutes=2)))
    early.advance(minutes=3)
    with pytest.raises(Unauthenticated, match="expired at 2030-01-01T12:02:00"):
        await registry.resolve(name)
    with pytest.raises(Unauthenticated, match="expired at"):
        await grant.admit(resuming=True)


async def test_no_new_session_after_its_time_but_resuming_goes_on(
    registry: TokenRegistry, clock: Clock
) -> None:
    _, grant = await issue(registry, uses=0, newSessionExpireTime=stamp(NOW + timedelta(minutes=1)))
    await grant.admit(resuming=False)
    clock.advance(seconds=61)
    with pytest.raises(PermissionDenied, match="no new sessions after 2030-01-01T12:01:00"):
        await grant.admit(resuming=False)
    await grant.admit(resuming=True)


class YieldingStore(MemoryStore):
    """A store whose calls let other tasks run, as a networked one does: CAS conflicts happen."""

    async def get(self, key: str) -> Versioned | None:
        await asyncio.sleep(0)
        return await super().get(key)

    async def put(
        self, key: str, value: bytes, *, ttl_s: float, expect: int | None = None
    ) -> int | None:
        await asyncio.sleep(0)
        return await super().put(key, value, ttl_s=ttl_s, expect=expect)


async def test_concurrent_sessions_spend_exactly_the_uses(clock: Clock) -> None:
    registry = TokenRegistry(YieldingStore(clock=clock.mono), clock=clock.wall)
    _, grant = await issue(registry, uses=5)
    results = await asyncio.gather(
        *(grant.admit(resuming=False) for _ in range(20)), return_exceptions=True
    )
    assert sum(r is None for r in results) == 5
    assert all(isinstance(r, PermissionDenied) for r in results if r is not None)


@pytest.mark.parametrize("name", ["auth_tokens/not-issued", "auth_tokens/", "an-api-key"])
async def test_unknown_tokens_are_refused(registry: TokenRegistry, name: str) -> None:
    with pytest.raises(Unauthenticated):
        await registry.resolve(name)


async def test_the_store_never_holds_the_secret(
    registry: TokenRegistry, store: MemoryStore
) -> None:
    name, _ = await issue(registry, bidiGenerateContentSetup=SDK_SETUP)
    secret = name.removeprefix("auth_tokens/")
    assert len(store) == 1
    for key, (value, _version, _expires) in store._entries.items():
        assert secret not in key and secret.encode() not in value
        assert key.startswith("token:")


async def test_the_store_forgets_a_token_when_it_expires(
    registry: TokenRegistry, store: MemoryStore, clock: Clock
) -> None:
    await issue(registry)
    clock.advance(minutes=30)
    assert len(store) == 1
    assert [await store.get(key) for key in list(store._entries)] == [None]


async def test_invalid_terms_are_invalid_argument(registry: TokenRegistry) -> None:
    with pytest.raises(InvalidArgument, match="expireTime must be in the future"):
        await registry.create(request(expireTime="2000-01-01T00:00:00Z"), "creator-hash")


async def test_a_grant_imposes_its_locked_fields_on_a_setup(registry: TokenRegistry) -> None:
    _, grant = await issue(
        registry, bidiGenerateContentSetup=SDK_SETUP, fieldMask="generationConfig.maxOutputTokens"
    )
    setup = Setup.model_validate(
        {"model": "models/x", "generationConfig": {"maxOutputTokens": 900, "temperature": 1.0}}
    )
    constrained = grant.constrain(setup)
    assert constrained.model == "models/x"
    assert constrained.generation_config is not None
    assert constrained.generation_config.max_output_tokens == 16
    assert constrained.generation_config.temperature == 1.0


async def test_a_fully_locked_grant_replaces_the_setup(registry: TokenRegistry) -> None:
    _, grant = await issue(registry, bidiGenerateContentSetup=SDK_SETUP)
    setup = Setup.model_validate(
        {
            "model": "models/x",
            "tools": [{"googleSearch": {}}],
            "sessionResumption": {"handle": "h"},
        }
    )
    constrained = grant.constrain(setup)
    assert constrained.model == SDK_SETUP["model"]
    assert constrained.tools is None
    assert constrained.session_resumption is not None
    assert constrained.session_resumption.handle == "h"
    assert constrained.system_instruction is not None
    assert constrained.system_instruction.parts[0].text == "Be brief."
