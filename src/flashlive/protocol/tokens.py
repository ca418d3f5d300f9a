"""Ephemeral auth tokens (`POST /v1alpha/auth_tokens`) and the setup constraints they carry.

A token lets a browser open Live sessions without holding the API key. Its creator may lock
parts of the Live setup: without a field mask the whole setup is the token's; with one, only
the listed paths (`generationConfig.temperature`, `systemInstruction`, ...) are. A locked path
takes the token's value, or is cleared when the token has none, whatever the client asked for.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from pydantic import Field, field_validator

from flashlive.protocol.base import Wire
from flashlive.protocol.caches import Timestamp
from flashlive.protocol.live import LiveGenerationConfig, Setup

NAME_PREFIX = "auth_tokens/"
DEFAULT_USES = 1
DEFAULT_LIFETIME = timedelta(minutes=30)  # expireTime when the request names none
DEFAULT_NEW_SESSION_WINDOW = timedelta(seconds=60)  # newSessionExpireTime likewise
MAX_AHEAD = timedelta(hours=20)  # neither time may be this far ahead, or further
MAX_USES = 2**31 - 1  # an int32 on the wire

# The client's own connection state: a token never overrides a resumption handle.
CLIENT_OWNED = frozenset({"sessionResumption"})


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(w[:1].upper() + w[1:] for w in rest)


def _aliases(model: type[Wire]) -> frozenset[str]:
    return frozenset(field.alias or name for name, field in model.model_fields.items())


SETUP_FIELDS = _aliases(Setup)
GENERATION_FIELDS = _aliases(LiveGenerationConfig)


class ConstraintSetup(Setup):
    """A Live setup as a token holds it: every field is optional, the model too."""

    model: str | None = None  # type: ignore[assignment]  # optional only here


def normalize_field_mask(raw: str | list[str]) -> list[str]:
    """Field paths in camelCase, each once, in order. Raises ValueError for unknown fields.

    google-genai writes `lock_additional_fields` entries as given (`system_instruction`) and
    only prefixes bare generation settings (`temperature`) when the token has constraints;
    both spellings and the bare names are accepted here.
    """
    items = raw.split(",") if isinstance(raw, str) else raw
    paths: list[str] = []
    for item in items:
        path = ".".join(_camel(part.strip()) for part in item.strip().split("."))
        if not path:
            continue
        if any(not part for part in path.split(".")):
            raise ValueError(f"fieldMask path {item.strip()!r} has an empty segment")
        head = path.split(".", 1)[0]
        if head not in SETUP_FIELDS:
            if head not in GENERATION_FIELDS:
                raise ValueError(f"fieldMask names {item.strip()!r}, not a field of a Live setup")
            path = f"generationConfig.{path}"
        if path not in paths:
            paths.append(path)
    return paths


class CreateAuthTokenRequest(Wire):
    """What google-genai's auth_tokens.create sends. Every field is optional."""

    uses: int | None = Field(default=None, ge=0, le=MAX_USES)
    expire_time: Timestamp | None = None
    new_session_expire_time: Timestamp | None = None
    bidi_generate_content_setup: ConstraintSetup | None = None
    field_mask: list[str] | None = None

    @field_validator("field_mask", mode="before")
    @classmethod
    def _paths(cls, value: Any) -> Any:
        if isinstance(value, str | list):
            return normalize_field_mask(value)
        return value

    @field_validator("bidi_generate_content_setup")
    @classmethod
    def _named_model(cls, value: ConstraintSetup | None) -> ConstraintSetup | None:
        if value is not None and value.model is not None and not value.model.strip():
            raise ValueError("model must name a model, or be left out")
        return value

    def terms(self, now: datetime) -> TokenTerms:
        """The token this request asks for, defaults filled in. Raises ValueError."""
        expire = self.expire_time or now + DEFAULT_LIFETIME
        _check_ahead("expireTime", expire, now)
        if self.new_session_expire_time is None:
            new_session = min(now + DEFAULT_NEW_SESSION_WINDOW, expire)
        else:
            new_session = self.new_session_expire_time
            _check_ahead("newSessionExpireTime", new_session, now)
            if new_session > expire:
                raise ValueError(
                    "newSessionExpireTime must not be after expireTime: a session could "
                    "start when the token no longer allows any message"
                )
        constraints = self.bidi_generate_content_setup
        return TokenTerms(
            uses=DEFAULT_USES if self.uses is None else self.uses,
            expire_time=expire,
            new_session_expire_time=new_session,
            setup=constraints.dump() if constraints is not None else None,
            field_mask=self.field_mask,
        )


def _check_ahead(field: str, value: datetime, now: datetime) -> None:
    if value <= now:
        raise ValueError(f"{field} must be in the future")
    if value - now >= MAX_AHEAD:
        raise ValueError(f"{field} must be less than 20 hours in the future")


@dataclass(frozen=True)
class TokenTerms:
    """A token's validated terms: what the registry stores and the answer echoes."""

    uses: int  # 0: unlimited
    expire_time: datetime
    new_session_expire_time: datetime
    setup: dict[str, Any] | None  # the locked setup, camelCase JSON
    field_mask: list[str] | None  # None: the whole setup is locked

    def constrain(self, setup: dict[str, Any]) -> dict[str, Any]:
        return constrain(setup, self.setup or {}, self.field_mask)


class AuthToken(Wire):
    """The answer: the token's name (`auth_tokens/<secret>`, the only place the secret appears)."""

    name: str
    uses: int
    expire_time: Timestamp
    new_session_expire_time: Timestamp
    bidi_generate_content_setup: dict[str, Any] | None = None
    field_mask: str | None = None

    @classmethod
    def of(cls, name: str, terms: TokenTerms) -> AuthToken:
        return cls(
            name=name,
            uses=terms.uses,
            expire_time=terms.expire_time,
            new_session_expire_time=terms.new_session_expire_time,
            bidi_generate_content_setup=terms.setup,
            field_mask=",".join(terms.field_mask) if terms.field_mask is not None else None,
        )


def constrain(
    setup: dict[str, Any], locked: dict[str, Any], field_mask: list[str] | None
) -> dict[str, Any]:
    """The client's setup (camelCase JSON) with the token's locked fields imposed.

    Without a mask, a token with constraints locks everything: the session gets the token's
    setup, keeping of the client's only its resumption state and, when the token names no
    model, its model. With a mask, each listed path takes the token's value or, where the
    token has none, is cleared. A session always needs a model, so an unset locked model
    leaves the client's.
    """
    result = copy.deepcopy(setup)
    if field_mask is None:
        if not locked:
            return result
        kept = {k: v for k, v in result.items() if k in CLIENT_OWNED}
        if "model" in result and "model" not in locked:
            kept["model"] = result["model"]
        return {**copy.deepcopy(locked), **kept}
    for path in field_mask:
        keys = path.split(".")
        if keys[0] in CLIENT_OWNED:
            continue
        found, value = _lookup(locked, keys)
        if found:
            _assign(result, keys, copy.deepcopy(value))
        elif keys != ["model"]:
            _remove(result, keys)
    return result


def _lookup(tree: dict[str, Any], keys: list[str]) -> tuple[bool, Any]:
    node: Any = tree
    for key in keys:
        if not isinstance(node, dict) or key not in node:
            return False, None
        node = node[key]
    return True, node


def _assign(tree: dict[str, Any], keys: list[str], value: Any) -> None:
    node = tree
    for key in keys[:-1]:
        child = node.get(key)
        if not isinstance(child, dict):
            child = node[key] = {}
        node = child
    node[keys[-1]] = value


def _remove(tree: dict[str, Any], keys: list[str]) -> None:
    node: Any = tree
    for key in keys[:-1]:
        node = node.get(key) if isinstance(node, dict) else None
    if isinstance(node, dict):
        node.pop(keys[-1], None)
