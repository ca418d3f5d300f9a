"""The Live WebSocket endpoints: move frames between a socket and a `LiveSession`.

`BidiGenerateContent` takes an API key; `BidiGenerateContentConstrained` takes an API key or
an ephemeral token, whose grant the session obeys (locked setup fields, uses, expiry).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from starlette.routing import BaseRoute, WebSocketRoute
from starlette.types import Message, Receive, Send
from starlette.websockets import WebSocket, WebSocketDisconnect

from flashlive import logs
from flashlive.api.errors import close_code, close_reason
from flashlive.api.keys import presented_key, presented_token
from flashlive.auth import TokenRegistry
from flashlive.errors import FlashliveError, PermissionDenied
from flashlive.ledger.records import hash_key
from flashlive.live.driver import LiveSession
from flashlive.live.services import Grant, LiveServices

log = logging.getLogger(__name__)

API_VERSIONS = ("v1beta", "v1alpha", "v1")
PATH = "/ws/google.ai.generativelanguage.{version}.GenerativeService.BidiGenerateContent"
CONSTRAINED_PATH = PATH + "Constrained"
CONSTRAINED_PATHS = frozenset(CONSTRAINED_PATH.format(version=v) for v in API_VERSIONS)
TOKEN_ON_PLAIN_PATH = (
    "ephemeral tokens open Live sessions only on BidiGenerateContentConstrained "
    "(google-genai does so with api_version v1alpha)"
)
REFUSAL_GRACE_S = 2.0  # how long a refused connection waits for the client's first frame


def is_constrained(path: str) -> bool:
    return path in CONSTRAINED_PATHS


class StarletteTransport:
    def __init__(self, websocket: WebSocket) -> None:
        self._ws = websocket

    async def receive(self) -> str | bytes | None:
        message = await self._ws.receive()
        if message["type"] == "websocket.disconnect":
            return None
        text = message.get("text")
        if text is not None:
            return str(text)
        return bytes(message.get("bytes") or b"")

    async def send(self, text: str) -> None:
        # A peer that is gone is reported by the receive side, which ends the session.
        with contextlib.suppress(WebSocketDisconnect, RuntimeError, OSError):
            await self._ws.send_text(text)

    async def close(self, code: int, reason: str) -> None:
        await self._ws.close(code, reason)


class LiveApi:
    def __init__(self, services: LiveServices, tokens: TokenRegistry) -> None:
        self._services = services
        self._tokens = tokens

    def routes(self) -> list[BaseRoute]:
        return [
            route
            for v in API_VERSIONS
            for route in (
                WebSocketRoute(PATH.format(version=v), self._session),
                WebSocketRoute(CONSTRAINED_PATH.format(version=v), self._constrained_session),
            )
        ]

    async def _session(self, websocket: WebSocket) -> None:
        if presented_token(websocket.scope) is not None:
            await refuse(websocket, PermissionDenied(TOKEN_ON_PLAIN_PATH))
            return
        await self._serve(websocket, grant=None)

    async def _constrained_session(self, websocket: WebSocket) -> None:
        grant: Grant | None = None
        token = presented_token(websocket.scope)
        if token is not None:
            try:
                grant = await self._tokens.resolve(token)
            except FlashliveError as exc:
                await refuse(websocket, exc)
                return
        await self._serve(websocket, grant=grant)

    async def _serve(self, websocket: WebSocket, *, grant: Grant | None) -> None:
        await websocket.accept()
        session = LiveSession(
            StarletteTransport(websocket),
            self._services,
            key_hash=hash_key(presented_key(websocket.scope)),
            grant=grant,
        )
        with logs.serving(session=session.id):  # every line of the session carries its id
            log.info(
                "live session %s opened from %s%s",
                session.id,
                websocket.client,
                " with an ephemeral token" if grant is not None else "",
            )
            await serve_session(session)
            log.info("live session %s ended", session.id)


async def refuse(websocket: WebSocket, exc: FlashliveError) -> None:
    """Accept, then close with the reason: a handshake refused with HTTP 403 says nothing."""
    log.info("live connection from %s refused: %s", websocket.client, close_reason(exc))
    await websocket.accept()
    await close_refused(websocket.receive, websocket.send, exc)


async def close_refused(receive: Receive, send: Send, exc: FlashliveError) -> None:
    """Close an accepted connection with the code and reason for `exc`.

    The close waits (briefly) for the client's first frame: google-genai sends its setup right
    after the handshake and reads the close reason only from its next receive, so a close that
    overtakes the setup fails the client in its send, without the reason.
    """
    message: Message = {}
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(REFUSAL_GRACE_S):
            message = await receive()
    if message.get("type") == "websocket.disconnect":
        return
    with contextlib.suppress(OSError, RuntimeError):
        await send(
            {"type": "websocket.close", "code": close_code(exc), "reason": close_reason(exc)}
        )


async def serve_session(session: LiveSession) -> None:
    """Run a session; when it fails, close its socket with the code and reason for the error."""
    failure = await session.run()
    if failure is None:
        return
    code, reason = close_code(failure), close_reason(failure)
    log.info("live session %s: closing %d (%s)", session.id, code, reason)
    with contextlib.suppress(TimeoutError, OSError, RuntimeError):
        async with asyncio.timeout(2.0):
            await session.transport.close(code, reason)
