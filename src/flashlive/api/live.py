"""The Live WebSocket endpoint: moves frames between a socket and a `LiveSession`."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from starlette.routing import BaseRoute, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from flashlive.api.errors import close_code, close_reason
from flashlive.api.keys import presented_key
from flashlive.ledger.records import hash_key
from flashlive.live.driver import LiveSession
from flashlive.live.services import LiveServices

log = logging.getLogger(__name__)

API_VERSIONS = ("v1beta", "v1alpha", "v1")
PATH = "/ws/google.ai.generativelanguage.{version}.GenerativeService.BidiGenerateContent"


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
    def __init__(self, services: LiveServices) -> None:
        self._services = services

    def routes(self) -> list[BaseRoute]:
        return [WebSocketRoute(PATH.format(version=v), self._session) for v in API_VERSIONS]

    async def _session(self, websocket: WebSocket) -> None:
        await websocket.accept()
        session = LiveSession(
            StarletteTransport(websocket),
            self._services,
            key_hash=hash_key(presented_key(websocket.scope)),
        )
        log.info("live session %s opened from %s", session.id, websocket.client)
        await serve_session(session)
        log.info("live session %s ended", session.id)


async def serve_session(session: LiveSession) -> None:
    """Run a session; when it fails, close its socket with the code and reason for the error."""
    failure = await session.run()
    if failure is None:
        return
    code, reason = close_code(failure), close_reason(failure)
    log.info("live session %s: closing %d (%s)", session.id, code, reason)
    with contextlib.suppress(TimeoutError, OSError, RuntimeError):
        await asyncio.wait_for(session.transport.close(code, reason), timeout=2.0)
