"""REST routes of the cachedContents resource (v1beta, also answered under v1 and v1alpha)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from flashlive.api.bodies import read_body
from flashlive.api.errors import error_response
from flashlive.api.rest import VERSIONS
from flashlive.cache.registry import NAME_PREFIX, CacheEntry, CacheRegistry
from flashlive.errors import FlashliveError, InvalidArgument
from flashlive.generation.service import CachedPrefix, CacheResolver, GenerationService
from flashlive.models import ModelManager
from flashlive.protocol.caches import (
    CachedContent,
    CachedContentUsageMetadata,
    CreateCachedContentRequest,
    ListCachedContentsResponse,
    expiration_of,
    expiration_update,
)

OwnerOf = Callable[[Request], str]
T = TypeVar("T")


class CachesApi:
    def __init__(
        self,
        registry: CacheRegistry,
        service: GenerationService,
        models: ModelManager,
        owner_of: OwnerOf,
        *,
        max_request_bytes: int,
    ) -> None:
        self._registry = registry
        self._service = service
        self._models = models
        self._owner_of = owner_of
        self._max_bytes = max_request_bytes
        # A deleted or expired cache's saved engine state is dead weight: free it with the entry.
        registry.on_delete(lambda entry: service.forget_cache(entry.model, entry.name))

    def resolver(self, request: Request) -> CacheResolver:
        """What generateContent needs to look up its `cachedContent`, as this caller."""
        return self.resolver_for(self._owner_of(request))

    def resolver_for(self, owner: str) -> CacheResolver:
        """The same for a caller known by its key hash (a Live session)."""

        async def resolve(name: str) -> CachedPrefix:
            return prefix_of(self._registry.get(owner, name.removeprefix(NAME_PREFIX)))

        return resolve

    def routes(self) -> list[Route]:
        routes = []
        for version in VERSIONS:
            routes += [
                Route(f"/{version}/cachedContents", self.collection, methods=["GET", "POST"]),
                Route(
                    f"/{version}/cachedContents/{{id}}",
                    self.item,
                    methods=["GET", "PATCH", "DELETE"],
                ),
            ]
        return routes

    async def collection(self, request: Request) -> Response:
        if request.method == "POST":
            return await _answer(self._create(request))
        return await _answer(self._list(request))

    async def item(self, request: Request) -> Response:
        cache_id: str = request.path_params["id"]
        if request.method == "PATCH":
            return await _answer(self._update(request, cache_id))
        if request.method == "DELETE":
            return await _answer(self._delete(request, cache_id))
        return await _answer(self._get(request, cache_id))

    async def _create(self, request: Request) -> Response:
        body = await read_body(request, CreateCachedContentRequest, self._max_bytes)
        spec = self._models.spec(body.model)
        expiration = _checked(lambda: expiration_of(body.ttl, body.expire_time))
        if not (body.contents or body.system_instruction or body.tools):
            raise InvalidArgument(
                "a cache holds contents, a systemInstruction or tools: this one holds none"
            )
        tokens = await self._service.count_cached(spec.id, _as_prefix(spec.id, body))
        entry = await asyncio.to_thread(
            self._registry.create,
            self._owner_of(request),
            spec.id,
            body.prefix(),
            tokens,
            ttl=expiration.ttl if expiration else None,
            expire_time=expiration.expire_time if expiration else None,
            display_name=body.display_name,
        )
        # Compute the context's engine state now, so even its first use skips the prefill.
        self._service.start_warming(spec.id, prefix_of(entry))
        return JSONResponse(_resource(entry).dump())

    async def _list(self, request: Request) -> Response:
        try:
            size = int(request.query_params.get("pageSize") or 0)
        except ValueError:
            raise InvalidArgument("pageSize must be an integer") from None
        page = self._registry.list(
            self._owner_of(request), size or None, request.query_params.get("pageToken") or None
        )
        body = ListCachedContentsResponse(
            cached_contents=[_resource(e) for e in page.entries],
            next_page_token=page.next_page_token,
        )
        return JSONResponse(body.dump())

    async def _get(self, request: Request, cache_id: str) -> Response:
        entry = self._registry.get(self._owner_of(request), cache_id)
        return JSONResponse(_resource(entry).dump())

    async def _update(self, request: Request, cache_id: str) -> Response:
        body = await read_body(request, CachedContent, self._max_bytes)
        mask = request.query_params.get("updateMask")
        expiration = _checked(lambda: expiration_update(body, mask))
        entry = await asyncio.to_thread(
            self._registry.update,
            self._owner_of(request),
            cache_id,
            ttl=expiration.ttl,
            expire_time=expiration.expire_time,
        )
        return JSONResponse(_resource(entry).dump())

    async def _delete(self, request: Request, cache_id: str) -> Response:
        # On the loop, not in a thread: deleting only unlinks, and the on_delete callbacks
        # (the KV state store) expect the loop's thread.
        self._registry.delete(self._owner_of(request), cache_id)
        return JSONResponse({})


async def _answer(work: Awaitable[Response]) -> Response:
    try:
        return await work
    except FlashliveError as exc:
        return error_response(exc)


def _checked(parse: Callable[[], T]) -> T:
    """The protocol's rules raise ValueError; here they become a 400."""
    try:
        return parse()
    except ValueError as exc:
        raise InvalidArgument(str(exc)) from None


def _as_prefix(model: str, body: CreateCachedContentRequest) -> CachedPrefix:
    return CachedPrefix(
        name="",
        model=model,
        contents=body.contents,
        system_instruction=body.system_instruction,
        tools=body.tools,
        tool_config=body.tool_config,
    )


def prefix_of(entry: CacheEntry) -> CachedPrefix:
    """The cached context as the generation service puts it in front of a request."""
    # The payload was validated as this model on create; validating again keeps one schema.
    saved = CreateCachedContentRequest.model_validate({"model": entry.model, **entry.payload})
    return CachedPrefix(
        name=entry.name,
        model=entry.model,
        contents=saved.contents,
        system_instruction=saved.system_instruction,
        tools=saved.tools,
        tool_config=saved.tool_config,
    )


def _resource(entry: CacheEntry) -> CachedContent:
    return CachedContent(
        name=entry.name,
        display_name=entry.display_name,
        model=f"models/{entry.model}",
        create_time=entry.create_time,
        update_time=entry.update_time,
        expire_time=entry.expire_time,
        usage_metadata=CachedContentUsageMetadata(total_token_count=entry.token_count),
    )
