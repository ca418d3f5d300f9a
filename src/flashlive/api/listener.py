"""The connection protocols uvicorn serves with, plus the time limits flashlive adds to them.

- HTTP: a request whose headers are not complete `header_timeout_s` after the connection opened
  (or, on a kept-alive connection, after the request's first byte) is dropped. uvicorn itself
  waits forever, so sockets that connect and send nothing, or send headers a byte at a time,
  would pile up until the server runs out of them.
- WebSocket: a keepalive ping goes out every `send_timeout_s / 2`; a client that has not
  answered one after `send_timeout_s` is reading nothing, and is closed with 1008 and a reason
  saying so. websockets' own close for that is 1011 "keepalive ping timeout", which tells the
  client the server failed.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.protocols.websockets.websockets_impl import WebSocketProtocol

log = logging.getLogger(__name__)

KEEPALIVE_FAILED = (1011, "keepalive ping timeout")  # what websockets closes with


class HeaderTimeoutProtocol(HttpToolsProtocol):
    """HTTP/1.1 (httptools) that drops a request whose headers take too long."""

    header_timeout_s = 10.0
    _header_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._start_header_timer()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._start_header_timer()  # a kept-alive connection's next request: its own limit

    def on_headers_complete(self) -> None:
        self._stop_header_timer()
        super().on_headers_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_header_timer()
        super().connection_lost(exc)

    def _start_header_timer(self) -> None:
        if self._header_timer is None:
            self._header_timer = self.loop.call_later(self.header_timeout_s, self._headers_late)

    def _stop_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_late(self) -> None:
        self._header_timer = None
        if not self.transport.is_closing():
            log.info(
                "closing a connection from %s: no complete request headers within %g s",
                self.client,
                self.header_timeout_s,
            )
            self.transport.close()


class LiveWebSocketProtocol(WebSocketProtocol):
    """WebSockets whose keepalive failure closes with 1008 and a reason a client can show."""

    send_timeout_s = 10.0

    def fail_connection(self, code: int = 1006, reason: str = "") -> None:
        if (code, reason) == KEEPALIVE_FAILED:
            code = 1008
            reason = f"the client read nothing for {self.send_timeout_s:g} s; the session is closed"
        super().fail_connection(code, reason)


def http_protocol(header_timeout_s: float) -> type[HeaderTimeoutProtocol]:
    return type("HttpProtocol", (HeaderTimeoutProtocol,), {"header_timeout_s": header_timeout_s})


def websocket_protocol(send_timeout_s: float) -> type[LiveWebSocketProtocol]:
    return type("LiveProtocol", (LiveWebSocketProtocol,), {"send_timeout_s": send_timeout_s})


def listener_options(*, header_timeout_s: float, send_timeout_s: float) -> dict[str, Any]:
    """uvicorn.Config keywords for these protocols."""
    return {
        "http": http_protocol(header_timeout_s),
        # The websockets implementation waits for the socket to drain on every send, which is
        # what bounds a Live session's memory when its client stops reading.
        "ws": websocket_protocol(send_timeout_s),
        "ws_ping_interval": send_timeout_s / 2,
        "ws_ping_timeout": send_timeout_s,
    }
