"""Usage accounting at the edge: quota checks, one ledger record per call, GET /v1beta/usage.

What a call's tokens count as (media included) is decided in `flashlive.usage`, for REST and
Live alike; this module only records it."""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import cast

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from flashlive.api.errors import error_response
from flashlive.api.keys import key_in, presented_key
from flashlive.api.metrics import Metrics
from flashlive.cache.registry import CacheEntry
from flashlive.errors import FlashliveError, InvalidArgument, PermissionDenied
from flashlive.ledger.prices import PriceTable
from flashlive.ledger.records import UsageRecord, hash_key, parse_since, utc_now
from flashlive.ledger.store import GroupBy, Ledger
from flashlive.protocol.base import model_id
from flashlive.protocol.generate import UsageMetadata
from flashlive.quota import Quotas
from flashlive.usage import tokens_by_modality


@dataclass
class UsageSetup:
    """What the server hands the app: where records go, how they are priced, who may spend."""

    ledger: Ledger
    prices: PriceTable
    quotas: Quotas
    admin_keys: frozenset[str] = frozenset()


class UsageRecorder:
    """Writes records, then counts them in the metrics and charges their tokens to the quota."""

    def __init__(self, setup: UsageSetup, metrics: Metrics) -> None:
        self._setup = setup
        self._metrics = metrics
        self._background: set[asyncio.Task[None]] = set()

    def check(self, key_hash: str) -> None:
        # Token counts are known only after the work, so a call is refused on tokens only when
        # the key's bucket is already spent (estimate 1); `record` charges the real count.
        self._setup.quotas.check(key_hash, tokens_estimate=1)

    async def record(self, rec: UsageRecord) -> None:
        await self._setup.ledger.record(rec)
        model = self._metrics.model_label(rec.model)
        self._metrics.tokens_total.labels(model, "input").inc(rec.total_input)
        self._metrics.tokens_total.labels(model, "output").inc(rec.total_output)
        self._metrics.cost_usd.labels(model).inc(self._setup.prices.cost(rec))
        self._setup.quotas.charge(rec.key_hash, rec.total_input + rec.total_output)

    def record_soon(self, rec: UsageRecord) -> None:
        """For paths that cannot wait (a stream being torn down): written in the background.

        One task per torn-down call, each one ledger write: they end as fast as the ledger
        writes, and a caller cannot make more of them than calls it makes."""
        task = asyncio.ensure_future(self.record(rec))
        self._background.add(task)
        task.add_done_callback(self._background.discard)


@dataclass
class CallUsage:
    """The facts of one REST call gathered while it runs."""

    key_hash: str
    model: str
    method: str
    started: float = field(default_factory=time.perf_counter)

    def record(
        self, status: int, request_id: str | None = None, usage: UsageMetadata | None = None
    ) -> UsageRecord:
        return UsageRecord(
            request_id=request_id or uuid.uuid4().hex,
            time=utc_now(),
            key_hash=self.key_hash,
            model=model_id(self.model),
            method=self.method,
            input_tokens=tokens_by_modality(usage.prompt_tokens_details, usage.prompt_token_count)
            if usage
            else {},
            output_tokens=tokens_by_modality(
                usage.candidates_tokens_details, usage.candidates_token_count or 0
            )
            if usage
            else {},
            cached_tokens=(usage.cached_content_token_count or 0) if usage else 0,
            latency_s=time.perf_counter() - self.started,
            status=status,
        )


def call_usage(request: Request, model: str, method: str) -> CallUsage:
    return CallUsage(hash_key(presented_key(request.scope)), model, method)


class UsageApi:
    """`GET /v1beta/usage` (our extension): the ledger summary, for admin keys only."""

    def __init__(self, setup: UsageSetup) -> None:
        self._setup = setup

    def routes(self) -> list[Route]:
        return [Route("/v1beta/usage", self.usage, methods=["GET"])]

    async def usage(self, request: Request) -> Response:
        try:
            self._require_admin(request)
            params = request.query_params
            by = params.get("by") or "day"
            if by not in ("day", "model", "key"):
                raise InvalidArgument(f"by must be day, model or key, not {by!r}")
            since = parse_since(params["since"]) if params.get("since") else None
            rows = await self._setup.ledger.summary(
                key_hash=self._key_filter(request), since=since, by=cast(GroupBy, by)
            )
        except FlashliveError as exc:
            return error_response(exc)
        return JSONResponse(
            {
                "by": by,
                "rows": [r.to_json() for r in rows],
                "totalCostUsd": round(sum(r.cost_usd for r in rows), 9),
            }
        )

    def _require_admin(self, request: Request) -> None:
        if not self._setup.admin_keys:
            raise PermissionDenied("usage is readable with an admin key; none is configured")
        if not key_in(presented_key(request.scope), self._setup.admin_keys):
            raise PermissionDenied("usage is readable with an admin key only")

    @staticmethod
    def _key_filter(request: Request) -> str | None:
        params = request.query_params
        if params.get("keyHash"):
            return params["keyHash"]
        if params.get("apiKey"):
            return hash_key(params["apiKey"])
        # ?key= is the credential unless the admin key came in the header: then it filters.
        if "x-goog-api-key" in request.headers and params.get("key"):
            return hash_key(params["key"])
        return None


def cache_storage_record(entry: CacheEntry, ended: datetime) -> UsageRecord:
    """A cachedContent is billed for its storage once, when it is deleted or expires."""
    lived_s = max(0.0, (min(ended, entry.expire_time) - entry.create_time).total_seconds())
    return UsageRecord(
        request_id=f"{entry.name}/storage",
        time=ended,
        key_hash=entry.owner,
        model=entry.model,
        method="cachedContents.storage",
        cache_storage_token_hours=entry.token_count * lived_s / 3600,
    )
