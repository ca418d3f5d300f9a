"""REST route of ephemeral auth tokens: `POST /v1alpha/auth_tokens` (also answered under v1beta)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from flashlive.api.bodies import read_body
from flashlive.api.errors import error_response
from flashlive.api.keys import presented_key, presented_token
from flashlive.auth import TokenRegistry
from flashlive.errors import FlashliveError, PermissionDenied
from flashlive.ledger.records import hash_key
from flashlive.models import ModelManager
from flashlive.protocol.tokens import CreateAuthTokenRequest

VERSIONS = ("v1alpha", "v1beta")
# The answer holds a credential: no cache along the way may keep it.
NO_STORE = {"Cache-Control": "no-store"}


class TokensApi:
    def __init__(
        self, registry: TokenRegistry, models: ModelManager, *, max_request_bytes: int
    ) -> None:
        self._registry = registry
        self._models = models
        self._max_bytes = max_request_bytes

    def routes(self) -> list[Route]:
        return [Route(f"/{v}/auth_tokens", self.create, methods=["POST"]) for v in VERSIONS]

    async def create(self, request: Request) -> Response:
        try:
            return await self._create(request)
        except FlashliveError as exc:
            return error_response(exc)

    async def _create(self, request: Request) -> Response:
        # The auth middleware already refuses tokens on REST routes; a token minting tokens
        # would outlive its own limits, so this route checks again.
        if presented_token(request.scope) is not None:
            raise PermissionDenied("an ephemeral token cannot create tokens; use an API key")
        body = await read_body(request, CreateAuthTokenRequest, self._max_bytes)
        constraints = body.bidi_generate_content_setup
        if constraints is not None and constraints.model is not None:
            self._models.spec(constraints.model)  # NotFound now, not when a session starts
        token = await self._registry.create(body, hash_key(presented_key(request.scope)))
        return JSONResponse(token.dump(), headers=NO_STORE)
