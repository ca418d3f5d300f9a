"""REST routes of the Gemini API (v1beta, also answered under v1 and v1alpha)."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TypeVar

from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from flashlive.api.bodies import read_body
from flashlive.api.errors import error_response, http_status, stream_error
from flashlive.api.metrics import Metrics
from flashlive.api.usage import CallUsage, UsageRecorder, call_usage
from flashlive.errors import (
    FlashliveError,
    InvalidArgument,
    NotFound,
)
from flashlive.generation.service import CacheResolver, GenerationService
from flashlive.ledger.records import UsageRecord
from flashlive.models import ModelManager, ModelSpec
from flashlive.protocol.base import model_id
from flashlive.protocol.generate import (
    CountTokensRequest,
    GenerateContentRequest,
    GenerateContentResponse,
    ListModelsResponse,
    Model,
)

log = logging.getLogger(__name__)
W = TypeVar("W", bound=BaseModel)
T = TypeVar("T")
VERSIONS = ("v1beta", "v1", "v1alpha")
REST_METHODS = ("generateContent", "streamGenerateContent", "countTokens")


class RestApi:
    def __init__(
        self,
        models: ModelManager,
        service: GenerationService,
        metrics: Metrics,
        *,
        max_request_bytes: int,
        usage: UsageRecorder | None = None,
        caches: Callable[[Request], CacheResolver] | None = None,
        live: bool = False,
    ) -> None:
        self._usage = usage
        self._caches = caches
        self._models = models
        self._service = service
        self._metrics = metrics
        self._max_bytes = max_request_bytes
        # What a model resource lists is what this server answers for every model.
        self._methods = [
            *REST_METHODS,
            *(["createCachedContent"] if caches is not None else []),
            *(["bidiGenerateContent"] if live else []),
        ]

    def routes(self) -> list[Route]:
        routes = []
        for version in VERSIONS:
            routes += [
                Route(f"/{version}/models", self.list_models, methods=["GET"]),
                Route(
                    f"/{version}/models/{{name}}", self.model_get_or_call, methods=["GET", "POST"]
                ),
            ]
        return routes

    def _model_resource(self, spec: ModelSpec, name: str | None = None) -> Model:
        """The resource of `spec`, or of the alias `name` that stands for it."""
        if name is None or name == spec.id:
            display, description = spec.display_name, spec.description
            globs = [a.pattern for a in self._models.aliases if a.is_glob and a.target == spec.id]
            if globs:
                description += " Also answers to " + ", ".join(globs) + " (model aliases)."
        else:
            display = f"{name} (alias of {spec.id})"
            description = f"models/{name} is answered by models/{spec.id}. {spec.description}"
        return Model(
            name=f"models/{name or spec.id}",
            base_model_id=spec.id,
            version=spec.version,
            display_name=display,
            description=description,
            # The longest prompt accepted: an answer needs at least one token of the context.
            input_token_limit=self._models.context_size(spec) - 1,
            output_token_limit=self._service.output_token_limit,
            supported_generation_methods=self._methods,
            temperature=spec.temperature,
            max_temperature=spec.max_temperature,
            top_p=spec.top_p,
            top_k=spec.top_k,
        )

    async def list_models(self, request: Request) -> Response:
        try:
            size = int(request.query_params.get("pageSize") or 50)
            start = int(request.query_params.get("pageToken") or 0)
        except ValueError:
            return error_response(InvalidArgument("pageSize and pageToken must be integers"))
        if size < 1 or start < 0:
            return error_response(InvalidArgument("pageSize must be positive"))
        listed = [self._model_resource(s) for s in self._models.specs] + [
            self._model_resource(self._models.spec(a.target), a.pattern)
            for a in self._models.aliases
            if not a.is_glob
        ]
        more = start + size < len(listed)
        body = ListModelsResponse(
            models=listed[start : start + size],
            next_page_token=str(start + size) if more else None,
        )
        return JSONResponse(body.dump())

    async def model_get_or_call(self, request: Request) -> Response:
        name: str = request.path_params["name"]
        model, _, action = name.partition(":")
        try:
            if request.method == "GET":
                if action:
                    raise NotFound(f"GET is not defined for :{action}")
                spec = self._models.spec(model)
                named = model_id(model)
                return JSONResponse(self._model_resource(spec, named).dump())
            if action not in REST_METHODS:
                raise NotFound(f"method :{action} is not supported on models/{model}")
        except FlashliveError as exc:
            return error_response(exc)
        return await self._call(request, model, action)

    async def _call(self, request: Request, model: str, action: str) -> Response:
        """One billable call: quota first, then the work; a ledger record either way."""
        call = call_usage(request, model, action)
        try:
            if self._usage is not None:
                self._usage.check(call.key_hash)
            if action == "generateContent":
                return await self._generate(request, model, call)
            if action == "streamGenerateContent":
                return await self._stream(request, model, call)
            count_request = await read_body(request, CountTokensRequest, self._max_bytes)
            counted = await self._service.count_tokens(model, count_request)
            await self._account(call.record(200))  # counting is free: no tokens billed
            return JSONResponse(counted.dump())
        except FlashliveError as exc:
            await self._account(call.record(http_status(exc)))
            return error_response(exc)
        except Exception as exc:  # a bug: the client gets a 500, the ledger its record
            await self._account(call.record(500))
            return error_response(exc)

    def _resolver(self, request: Request) -> CacheResolver | None:
        return self._caches(request) if self._caches is not None else None

    async def _account(self, record: UsageRecord) -> None:
        if self._usage is not None:
            await self._usage.record(record)

    def _account_soon(self, record: UsageRecord) -> None:
        if self._usage is not None:
            self._usage.record_soon(record)

    async def _generate(self, request: Request, model: str, call: CallUsage) -> Response:
        body = await read_body(request, GenerateContentRequest, self._max_bytes)
        started = time.perf_counter()
        first_token: list[float] = []

        def mark_first_token() -> None:
            first_token.append(time.perf_counter())

        response = await _unless_disconnected(
            request,
            self._service.generate(
                model, body, mark_first_token, resolve_cache=self._resolver(request)
            ),
        )
        if response is None:
            await self._account(call.record(499))
            return Response(status_code=499)
        call.model = response.model_version
        # Written before the body leaves: a client that got its answer finds it in the ledger.
        await self._account(call.record(200, response.response_id, response.usage_metadata))
        if first_token:
            self._metrics.ttft.labels(
                self._metrics.model_label(response.model_version), "false"
            ).observe(first_token[0] - started)
        self._record(response)
        return JSONResponse(response.dump())

    async def _stream(self, request: Request, model: str, call: CallUsage) -> Response:
        body = await read_body(request, GenerateContentRequest, self._max_bytes)
        started = time.perf_counter()
        sse = request.query_params.get("alt") == "sse"
        chunks = self._service.stream(model, body, resolve_cache=self._resolver(request))
        # Wait for the first chunk before answering 200, so a bad request still gets its error
        # status; a client that leaves meanwhile (a long prefill) stops the work at once.
        first = await _unless_disconnected(request, anext(chunks))
        if first is None:
            await chunks.aclose()
            await self._account(call.record(499))
            return Response(status_code=499)
        call.model = first.model_version
        self._metrics.ttft.labels(self._metrics.model_label(first.model_version), "true").observe(
            time.perf_counter() - started
        )

        async def stream_events() -> AsyncIterator[bytes]:
            sent = 0
            last: GenerateContentResponse | None = None
            status = 499  # until the final chunk is recorded: the client left
            try:
                if not sse:
                    yield b"["
                async for chunk in _prepend(first, chunks):
                    if chunk.usage_metadata is not None:
                        # The final chunk: recorded before it is sent, so a stream the client
                        # saw complete is always in the ledger.
                        await self._account(
                            call.record(200, chunk.response_id, chunk.usage_metadata)
                        )
                        status = 200
                    payload = json.dumps(chunk.dump()).encode()
                    if sse:
                        yield b"data: " + payload + b"\r\n\r\n"
                    else:
                        yield (b",\r\n" if sent else b"") + payload
                    sent += 1
                    last = chunk
                if not sse:
                    yield b"]"
            except Exception as exc:
                status = http_status(exc)
                failure = stream_error(exc, first.response_id)
                if sse:
                    yield b"data: " + failure + b"\r\n\r\n"
                else:  # the error is the array's last element, never a clean-looking end
                    yield (b",\r\n" if sent else b"") + failure + b"]"
            finally:
                await chunks.aclose()
                if status != 200:
                    request_id = last.response_id if last is not None else first.response_id
                    self._account_soon(call.record(status, request_id))
                if last is not None:
                    self._record(last)

        media = "text/event-stream" if sse else "application/json"
        return StreamingResponse(stream_events(), media_type=media)

    def _record(self, response: GenerateContentResponse) -> None:
        usage = response.usage_metadata
        if usage is not None:
            candidate = response.candidates[0] if response.candidates else None
            log.info(
                "response=%s model=%s prompt_tokens=%d output_tokens=%d finish=%s",
                response.response_id,
                response.model_version,
                usage.prompt_token_count,
                usage.candidates_token_count or 0,
                candidate.finish_reason.value if candidate and candidate.finish_reason else "-",
            )
            model = self._metrics.model_label(response.model_version)
            self._metrics.prompt_tokens.labels(model).inc(usage.prompt_token_count)
            self._metrics.tokens_generated.labels(model).inc(usage.candidates_token_count or 0)


async def _prepend(
    first: GenerateContentResponse, rest: AsyncIterator[GenerateContentResponse]
) -> AsyncIterator[GenerateContentResponse]:
    yield first
    async for item in rest:
        yield item


async def _unless_disconnected(request: Request, work: Awaitable[T]) -> T | None:
    """The result of `work`, or None when the client disconnects first (`work` is cancelled).

    Two tasks a request, both finished (or cancelled) before this returns."""
    task = asyncio.ensure_future(work)
    left = asyncio.ensure_future(_disconnected(request))
    try:
        await asyncio.wait({task, left}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        left.cancel()
        if not task.done():
            task.cancel()
            await asyncio.wait({task})
    return None if task.cancelled() else task.result()


async def _disconnected(request: Request) -> None:
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return
