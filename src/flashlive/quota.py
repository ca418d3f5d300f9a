"""Per-key quotas: requests per minute and tokens per minute, as token buckets in memory.

A bucket holds up to one minute's allowance and refills continuously, so a key may burst up to
its limit and then proceeds at the limit's pace. `check` spends one request before the work and
refuses when the token bucket cannot cover the estimate; `charge` spends the tokens the call
really used afterwards, which may run the bucket into debt: the next calls wait until it is paid.
Limits of 0 mean unlimited. State is per process and starts full on restart.
"""

from __future__ import annotations

import json
import math
import time
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from flashlive.errors import InvalidArgument, ResourceExhausted
from flashlive.ledger.records import hash_key

MINUTE_S = 60.0


@dataclass(frozen=True)
class QuotaLimits:
    requests_per_min: int = 0  # 0: unlimited
    tokens_per_min: int = 0


class _Bucket:
    def __init__(self, per_min: int, now: float) -> None:
        self.capacity = float(per_min)
        self.rate = per_min / MINUTE_S  # refill per second
        self.level = self.capacity
        self.at = now

    def refill(self, now: float) -> None:
        self.level = min(self.capacity, self.level + (now - self.at) * self.rate)
        self.at = now

    def wait_for(self, amount: float) -> float:
        """Seconds until the bucket holds `amount` (at most its capacity)."""
        missing = min(amount, self.capacity) - self.level
        return max(0.0, missing / self.rate)


class Quotas:
    def __init__(
        self,
        default: QuotaLimits,
        overrides: Mapping[str, QuotaLimits] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._default = default
        self._overrides = dict(overrides or {})  # by key hash
        self._clock = clock
        self._requests: dict[str, _Bucket] = {}
        self._tokens: dict[str, _Bucket] = {}

    def limits(self, key_hash: str) -> QuotaLimits:
        return self._overrides.get(key_hash, self._default)

    def check(self, key_hash: str, tokens_estimate: int = 1) -> None:
        """Spend one request, or raise ResourceExhausted with how long to wait."""
        now = self._clock()
        limits = self.limits(key_hash)
        requests = self._bucket(self._requests, key_hash, limits.requests_per_min, now)
        tokens = self._bucket(self._tokens, key_hash, limits.tokens_per_min, now)
        waits = []
        if requests is not None:
            waits.append(("requests", limits.requests_per_min, requests.wait_for(1)))
        if tokens is not None:
            waits.append(("tokens", limits.tokens_per_min, tokens.wait_for(tokens_estimate)))
        for what, limit, wait in waits:
            if wait > 0:
                raise ResourceExhausted(
                    f"Quota exceeded: {limit} {what} per minute for this API key; "
                    f"retry in {math.ceil(wait)} s",
                    retry_after_s=wait,
                )
        if requests is not None:
            requests.level -= 1

    def charge(self, key_hash: str, tokens: int) -> None:
        """Spend the tokens a finished call used (may leave the bucket in debt)."""
        limit = self.limits(key_hash).tokens_per_min
        bucket = self._bucket(self._tokens, key_hash, limit, self._clock())
        if bucket is not None:
            bucket.level -= tokens

    @staticmethod
    def _bucket(table: dict[str, _Bucket], key: str, per_min: int, now: float) -> _Bucket | None:
        if per_min <= 0:
            return None
        bucket = table.get(key)
        if bucket is None or bucket.capacity != per_min:
            bucket = table[key] = _Bucket(per_min, now)
        bucket.refill(now)
        return bucket


def load_overrides(path: Path | None, default: QuotaLimits) -> dict[str, QuotaLimits]:
    """Per-key limits from TOML or JSON: `[keys."API-KEY"] requests_per_min = 10`.

    Keys are hashed on load, like the ledger's; a limit a key's entry leaves out is the default.
    """
    if path is None:
        return {}
    try:
        raw = path.read_bytes()
        data: Any = (
            json.loads(raw) if path.suffix.lower() == ".json" else tomllib.loads(raw.decode())
        )
    except (OSError, ValueError) as exc:
        raise InvalidArgument(f"cannot read the quota file {path}: {exc}") from None
    keys = data.get("keys") if isinstance(data, dict) else None
    if not isinstance(keys, dict):
        raise InvalidArgument(f"{path}: expected a 'keys' table")
    return {
        hash_key(str(key)): _limits(entry, default, f"{path}: keys.<key>")
        for key, entry in keys.items()
    }


def _limits(entry: Any, default: QuotaLimits, where: str) -> QuotaLimits:
    if not isinstance(entry, dict) or set(entry) - {"requests_per_min", "tokens_per_min"}:
        raise InvalidArgument(f"{where}: expected requests_per_min and/or tokens_per_min")
    for name, value in entry.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise InvalidArgument(f"{where}.{name}: expected a non-negative integer")
    return replace(default, **entry)
