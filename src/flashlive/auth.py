"""Who may call: API keys, and the ephemeral tokens they issue for the Live API.

An empty key set means the server is open (loopback only); tokens work there too.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ValidationError

from flashlive.errors import (
    Internal,
    InvalidArgument,
    PermissionDenied,
    Unauthenticated,
    Unavailable,
    invalid_from_validation,
)
from flashlive.ledger.records import utc_now
from flashlive.protocol.caches import format_timestamp
from flashlive.protocol.live import Setup
from flashlive.protocol.tokens import NAME_PREFIX, AuthToken, CreateAuthTokenRequest, constrain
from flashlive.store import Store

log = logging.getLogger(__name__)


class ApiKeys:
    def __init__(self, keys: frozenset[str]) -> None:
        self._keys = [k.encode() for k in keys]

    @property
    def enabled(self) -> bool:
        return bool(self._keys)

    def check(self, presented: str | None) -> None:
        """Raise unless `presented` is a valid key (or keys are off)."""
        if not self._keys:
            return
        if not presented:
            raise Unauthenticated(
                "API key missing: send it in the x-goog-api-key header or the key query parameter"
            )
        candidate = presented.encode()
        # Compare against every key so the time taken does not reveal which one nearly matched.
        matched = False
        for key in self._keys:
            matched |= hmac.compare_digest(key, candidate)
        if not matched:
            raise PermissionDenied("API key not valid. Please pass a valid API key.")


# --- ephemeral tokens ----------------------------------------------------------------------------

STORE_PREFIX = "token:"
SECRET_BYTES = 32
MAX_ADMIT_ATTEMPTS = 64  # compare-and-set rounds before a use is refused as contended


class _Record(BaseModel):
    """A token as the store keeps it: its terms and the uses spent, never its secret."""

    key_hash: str
    uses: int  # 0: unlimited
    used: int = 0
    expire_time: datetime
    new_session_expire_time: datetime
    setup: dict[str, Any] | None = None
    field_mask: list[str] | None = None


def _store_key(secret: str) -> str:
    return STORE_PREFIX + hashlib.sha256(secret.encode()).hexdigest()


class TokenRegistry:
    """Issues ephemeral tokens and checks them, keeping their state in a `Store`.

    Only a hash of each secret is stored, so whoever reads the store (a Redis shared by several
    servers, say) cannot use the tokens it holds.
    """

    def __init__(self, store: Store, *, clock: Callable[[], datetime] = utc_now) -> None:
        self._store = store
        self._clock = clock

    async def create(self, request: CreateAuthTokenRequest, creator_key_hash: str) -> AuthToken:
        now = self._clock()
        try:
            terms = request.terms(now)
        except ValueError as exc:
            raise InvalidArgument(str(exc)) from None
        secret = secrets.token_urlsafe(SECRET_BYTES)
        record = _Record(
            key_hash=creator_key_hash,
            uses=terms.uses,
            expire_time=terms.expire_time,
            new_session_expire_time=terms.new_session_expire_time,
            setup=terms.setup,
            field_mask=terms.field_mask,
        )
        ttl = (terms.expire_time - now).total_seconds()
        written = await self._store.put(
            _store_key(secret), record.model_dump_json().encode(), ttl_s=ttl, expect=0
        )
        if written is None:  # 256 random bits collided: not in this universe
            raise Internal("could not store the new token; try again")
        log.info(
            "ephemeral token created by key %s: %s uses, new sessions until %s, expires %s",
            creator_key_hash,
            terms.uses or "unlimited",
            format_timestamp(terms.new_session_expire_time),
            format_timestamp(terms.expire_time),
        )
        return AuthToken.of(NAME_PREFIX + secret, terms)

    async def resolve(self, name: str) -> EphemeralGrant:
        """The grant of a presented token. Raises Unauthenticated when it is unknown or expired.

        Whether a session may start is decided later, by `admit`, once its setup says whether
        it is a new session or a resumed one.
        """
        secret = name.removeprefix(NAME_PREFIX)
        if not name.startswith(NAME_PREFIX) or not secret:
            raise Unauthenticated(f"an ephemeral token is named {NAME_PREFIX}<secret>")
        key = _store_key(secret)
        record = await self._load(key)
        _check_alive(record, self._clock())
        return EphemeralGrant(
            key_hash=record.key_hash,
            expire_time=record.expire_time,
            new_session_expire_time=record.new_session_expire_time,
            setup=record.setup,
            field_mask=record.field_mask,
            _store=self._store,
            _store_key=key,
            _clock=self._clock,
        )

    async def _load(self, key: str) -> _Record:
        found = await self._store.get(key)
        if found is None:
            raise Unauthenticated(UNKNOWN_TOKEN)
        return _Record.model_validate_json(found.value)


UNKNOWN_TOKEN = "ephemeral token not valid: it is unknown or has expired"


def _check_alive(record: _Record, now: datetime) -> None:
    if now >= record.expire_time:
        raise Unauthenticated(f"ephemeral token expired at {format_timestamp(record.expire_time)}")


@dataclass(frozen=True)
class EphemeralGrant:
    """What one presented token allows a Live session (a `live.services.Grant`)."""

    key_hash: str  # the creator's: billed, its quota spent
    expire_time: datetime
    new_session_expire_time: datetime
    setup: dict[str, Any] | None
    field_mask: list[str] | None
    _store: Store = field(repr=False)
    _store_key: str = field(repr=False)
    _clock: Callable[[], datetime] = field(repr=False)

    def constrain(self, setup: Setup) -> Setup:
        imposed = constrain(setup.dump(), self.setup or {}, self.field_mask)
        try:
            return Setup.model_validate(imposed)
        except ValidationError as exc:
            detail = invalid_from_validation(exc).message.split(". ", 1)[-1]
            raise InvalidArgument(f"setup with the token's constraints: {detail}") from None

    async def admit(self, *, resuming: bool) -> None:
        """Spend one use for a new session, atomically; a resumed session spends none.

        Raises Unauthenticated when the token is gone or expired, PermissionDenied when it
        allows no new session (used up, or past its newSessionExpireTime).
        """
        for _ in range(MAX_ADMIT_ATTEMPTS):
            found = await self._store.get(self._store_key)
            if found is None:
                raise Unauthenticated(UNKNOWN_TOKEN)
            record = _Record.model_validate_json(found.value)
            now = self._clock()
            _check_alive(record, now)
            if resuming:
                return
            if now >= record.new_session_expire_time:
                raise PermissionDenied(
                    "ephemeral token allows no new sessions after "
                    f"{format_timestamp(record.new_session_expire_time)}; only resuming one"
                )
            if record.uses and record.used >= record.uses:
                raise PermissionDenied(
                    f"ephemeral token used up: its {record.uses} use(s) are spent "
                    "(resuming a session spends none)"
                )
            spent = record.model_copy(update={"used": record.used + 1})
            ttl = (record.expire_time - now).total_seconds()
            written = await self._store.put(
                self._store_key,
                spent.model_dump_json().encode(),
                ttl_s=ttl,
                expect=found.version,
            )
            if written is not None:
                return
        raise Unavailable("ephemeral token is in use by many sessions at once; try again")
