"""API keys: who may call. Empty key set means the server is open (loopback only)."""

from __future__ import annotations

import hmac

from flashlive.errors import PermissionDenied, Unauthenticated


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
