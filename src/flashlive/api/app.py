"""The ASGI application: routes, auth, metrics and error mapping wired together."""

from __future__ import annotations

import re
import secrets

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from flashlive import logs
from flashlive.api.caches import CachesApi
from flashlive.api.errors import error_response
from flashlive.api.keys import presented_key, presented_token
from flashlive.api.live import TOKEN_ON_PLAIN_PATH, LiveApi, close_refused, is_constrained
from flashlive.api.metrics import Metrics, MetricsMiddleware
from flashlive.api.rest import RestApi
from flashlive.api.tokens import TokensApi
from flashlive.api.usage import UsageApi, UsageRecorder, UsageSetup, cache_storage_record
from flashlive.auth import ApiKeys, TokenRegistry
from flashlive.cache.registry import CacheRegistry
from flashlive.errors import FlashliveError, InvalidArgument, NotFound, PermissionDenied
from flashlive.generation.service import GenerationService
from flashlive.ledger.records import hash_key, utc_now
from flashlive.live.services import LiveServices
from flashlive.models import ModelManager
from flashlive.store import Store

OPEN_PATHS = frozenset({"/healthz"})


class AuthMiddleware:
    """Every route but /healthz needs a key when keys are configured.

    An ephemeral token is never a key: it opens BidiGenerateContentConstrained sessions only
    (that endpoint checks it), whether or not the server has keys.
    """

    def __init__(self, app: ASGIApp, keys: ApiKeys) -> None:
        self._app = app
        self._keys = keys

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket") and scope["path"] not in OPEN_PATHS:
            try:
                _check_credential(scope, self._keys)
            except FlashliveError as exc:
                if scope["type"] == "http":
                    await error_response(exc)(scope, receive, send)
                else:
                    # Accept first so the refusal carries a close code and reason: a handshake
                    # refused with HTTP 403 tells a Live client nothing it can show.
                    await receive()  # websocket.connect
                    await send({"type": "websocket.accept"})
                    await close_refused(receive, send, exc)
                return
        await self._app(scope, receive, send)


def _check_credential(scope: Scope, keys: ApiKeys) -> None:
    if presented_token(scope) is None:
        keys.check(presented_key(scope))
    elif scope["type"] == "http":
        raise PermissionDenied(
            "ephemeral tokens grant access to the Live API only "
            "(BidiGenerateContentConstrained); call REST methods with an API key"
        )
    elif not is_constrained(scope["path"]):
        raise PermissionDenied(TOKEN_ON_PLAIN_PATH)


class SlashMiddleware:
    """`//ws/...` is `/ws/...` (the JavaScript SDK joins its base URL and path with two slashes),
    and `/v1beta/models/` is `/v1beta/models`: served in place, never redirected (a redirect
    would be built from the client's Host header, and carry its `?key=` there)."""

    def __init__(self, app: ASGIApp) -> None:
        self._app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            path = scope["path"]
            tidy = _SLASHES.sub("/", path)
            if len(tidy) > 1:
                tidy = tidy.rstrip("/") or "/"
            if tidy != path:
                scope = dict(scope, path=tidy)
        await self._app(scope, receive, send)


_SLASHES = re.compile(r"/{2,}")


class ContextMiddleware:
    """Each HTTP request gets an id its log lines carry (`logs.serving`); its caller, for fair
    queues, is its key. A Live session's lines carry the session's id instead (`api/live.py`)."""

    def __init__(self, app: ASGIApp) -> None:
        self._app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        key = presented_key(scope)
        with logs.serving(request=secrets.token_urlsafe(12), caller=hash_key(key) if key else None):
            await self._app(scope, receive, send)


def build_app(
    *,
    models: ModelManager,
    service: GenerationService,
    keys: ApiKeys,
    default_model: str,
    max_request_bytes: int,
    live: LiveServices,
    usage: UsageSetup | None = None,
    caches: CacheRegistry | None = None,
    store: Store | None = None,
) -> ASGIApp:
    metrics = Metrics(models)
    # Resumption state and ephemeral tokens share one store; without one, the Live services'
    # own (in memory unless the caller set another) serves.
    if store is not None:
        live.store = store
    tokens = TokenRegistry(live.store)
    caches_api = (
        CachesApi(
            caches,
            service,
            models,
            lambda request: hash_key(presented_key(request.scope)),
            max_request_bytes=max_request_bytes,
        )
        if caches is not None
        else None
    )
    recorder = UsageRecorder(usage, metrics) if usage is not None else None
    _share_with_live(live, recorder, caches_api)
    if caches is not None and recorder is not None:
        billing = recorder
        caches.on_delete(lambda entry: billing.record_soon(cache_storage_record(entry, utc_now())))
    rest = RestApi(
        models,
        service,
        metrics,
        max_request_bytes=max_request_bytes,
        usage=recorder,
        caches=caches_api.resolver if caches_api is not None else None,
        live=True,
    )
    app = Starlette(
        routes=[
            *_service_routes(models, default_model, metrics),
            *rest.routes(),
            *LiveApi(live, tokens).routes(),
            *TokensApi(tokens, models, max_request_bytes=max_request_bytes).routes(),
            *(UsageApi(usage).routes() if usage is not None else []),
            *(caches_api.routes() if caches_api is not None else []),
        ],
        exception_handlers={HTTPException: _http_error, Exception: _unhandled},
    )
    app.router.redirect_slashes = False  # SlashMiddleware serves those paths instead
    return ContextMiddleware(SlashMiddleware(MetricsMiddleware(AuthMiddleware(app, keys), metrics)))


def _share_with_live(
    live: LiveServices, recorder: UsageRecorder | None, caches_api: CachesApi | None
) -> None:
    if recorder is not None:
        live.quota = recorder.check  # a key over its quota gets no more Live turns either
        live.ledger = recorder  # Live turns are billed through the same recorder
    if caches_api is not None:
        live.caches = caches_api.resolver_for  # a Live setup may name a cachedContent too


def _service_routes(models: ModelManager, default_model: str, metrics: Metrics) -> list[Route]:
    async def healthz(request: Request) -> Response:
        if default_model in models.loaded:
            return JSONResponse({"status": "ok", "models": sorted(models.loaded)})
        return JSONResponse({"status": "loading", "model": default_model}, status_code=503)

    async def metrics_endpoint(request: Request) -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return [
        Route("/healthz", healthz, methods=["GET"]),
        Route("/metrics", metrics_endpoint, methods=["GET"]),
    ]


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 404:
        return error_response(NotFound(f"{request.url.path} is not a known route"))
    if exc.status_code == 405:
        return error_response(
            InvalidArgument(f"{request.method} is not allowed on {request.url.path}")
        )
    return error_response(InvalidArgument(str(exc.detail)))


async def _unhandled(request: Request, exc: Exception) -> Response:
    return error_response(exc)
