"""The connection protocols flashlive serves with, on a real socket: uvicorn in this process with
a two-route app, raw clients that misbehave the way the fuzzer's did."""

from __future__ import annotations

import asyncio
import base64
import os
import socket
import struct
import time
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

from flashlive.api.listener import listener_options

HEADER_TIMEOUT_S = 0.5
SEND_TIMEOUT_S = 0.6


async def hello(request: Request) -> Response:
    return PlainTextResponse("hello")


async def live(websocket: WebSocket) -> None:
    await websocket.accept()
    while True:  # a session that only listens: nothing makes it write but the keepalive
        await websocket.receive()


@pytest_asyncio.fixture
async def port() -> AsyncIterator[int]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        free = int(probe.getsockname()[1])
    app = Starlette(routes=[Route("/", hello), WebSocketRoute("/ws", live)])
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=free,
        log_level="warning",
        lifespan="off",
        **listener_options(header_timeout_s=HEADER_TIMEOUT_S, send_timeout_s=SEND_TIMEOUT_S),
    )
    server = uvicorn.Server(config)
    serving = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.01)
    yield free
    server.should_exit = True
    await serving


async def closed_after(reader: asyncio.StreamReader, limit: float) -> float:
    """Seconds until the server closes the connection (reading whatever it sends)."""
    began = time.monotonic()
    async with asyncio.timeout(limit):
        while await reader.read(4096):
            pass
    return time.monotonic() - began


@pytest.mark.parametrize("sent", [b"", b"GET / HTTP/1.1\r\nHost: x\r\n", b"G"])
async def test_a_request_whose_headers_never_complete_is_dropped(port: int, sent: bytes) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(sent)
    waited = await closed_after(reader, 5)
    writer.close()
    assert HEADER_TIMEOUT_S * 0.8 <= waited < HEADER_TIMEOUT_S + 2


async def test_a_header_dribbled_a_byte_at_a_time_is_dropped_too(port: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    closed = asyncio.ensure_future(closed_after(reader, 5))
    for byte in b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 100:
        if closed.done():
            break
        writer.write(bytes([byte]))
        await asyncio.sleep(0.05)
    assert await closed < HEADER_TIMEOUT_S + 2
    writer.close()


async def test_prompt_requests_are_served_and_kept_alive(port: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    for _ in range(3):
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200")
        assert await reader.readexactly(5) == b"hello"
        await asyncio.sleep(HEADER_TIMEOUT_S * 0.6)  # idle between requests is not header time
    writer.close()


def frames(data: bytes) -> list[tuple[int, bytes]]:
    """(opcode, payload) of the unmasked frames a server sent."""
    found = []
    while len(data) >= 2:
        opcode, length = data[0] & 0x0F, data[1] & 0x7F
        start = 2
        if length == 126:
            length, start = struct.unpack(">H", data[2:4])[0], 4
        elif length == 127:
            length, start = struct.unpack(">Q", data[2:10])[0], 10
        found.append((opcode, data[start : start + length]))
        data = data[start + length :]
    return found


async def test_a_websocket_client_that_never_reads_is_closed_1008_not_1011(port: int) -> None:
    key = base64.b64encode(os.urandom(16)).decode()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        (
            "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    await asyncio.sleep(SEND_TIMEOUT_S * 3)  # no pong goes back meanwhile: nothing is read
    async with asyncio.timeout(5):
        received = await reader.read()  # what the server sent, up to its closing the socket
    writer.close()
    head, _, rest = received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 101")
    sent = frames(rest)
    assert sent[0][0] == 0x9  # a keepalive ping
    opcode, payload = sent[-1]
    assert opcode == 0x8
    code = struct.unpack(">H", payload[:2])[0]
    assert code == 1008, payload
    assert b"read nothing" in payload
