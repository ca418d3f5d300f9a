"""The cases of issue 11's probing that killed the server, stalled it or leaked a key, against a
real server process: each is now a 400 / a 1007 close, and the server goes on serving."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import httpx
import pytest
import websockets
from conftest import FAST_MODEL, Server

pytestmark = pytest.mark.timeout(300)

WS = "/ws/google.ai.generativelanguage.{version}.GenerativeService.BidiGenerateContent"
EMPTY_ENUM = {"enum": []}
TEXT = [{"parts": [{"text": "Pick one."}]}]


def alive(server: Server) -> None:
    assert server.process.poll() is None, server.log()[-3000:]
    assert httpx.get(f"{server.base_url}/healthz", timeout=10).status_code == 200


@pytest.mark.parametrize(
    "body",
    [
        {
            "generationConfig": {
                "responseMimeType": "application/json",
                "responseJsonSchema": EMPTY_ENUM,
            }
        },
        {
            "generationConfig": {
                "responseMimeType": "application/json",
                "responseJsonSchema": {"anyOf": []},
            }
        },
        {
            "generationConfig": {
                "responseMimeType": "application/json",
                "responseJsonSchema": {"type": []},
            }
        },
        {
            "tools": [
                {"functionDeclarations": [{"name": "f", "parametersJsonSchema": EMPTY_ENUM}]}
            ],
            "toolConfig": {"functionCallingConfig": {"mode": "ANY"}},
        },
        {
            "generationConfig": {
                "responseMimeType": "application/json",
                "responseJsonSchema": {"type": "string", "pattern": "["},
            }
        },
        {
            "generationConfig": {
                "responseMimeType": "application/json",
                "responseJsonSchema": {"$ref": "#"},
            }
        },
    ],
)
@pytest.mark.parametrize("action", ["generateContent", "streamGenerateContent?alt=sse"])
def test_schemas_that_killed_the_server_are_400s(
    server: Server, body: dict[str, Any], action: str
) -> None:
    response = httpx.post(
        f"{server.base_url}/v1beta/models/{FAST_MODEL}:{action}",
        json={"contents": TEXT, **body},
        timeout=60,
    )
    assert response.status_code == 400, response.text
    assert response.json()["error"]["status"] == "INVALID_ARGUMENT"
    alive(server)


def test_enum_values_with_quotes_and_newlines_answer_one_of_them(server: Server) -> None:
    values = ['say "yes"', "no\nway", "back\\slash"]
    response = httpx.post(
        f"{server.base_url}/v1beta/models/{FAST_MODEL}:generateContent",
        json={
            "contents": TEXT,
            "generationConfig": {
                "responseMimeType": "text/x.enum",
                "responseSchema": {"type": "STRING", "enum": values},
                "maxOutputTokens": 16,
            },
        },
        timeout=120,
    )
    assert response.status_code == 200, response.text
    answer = response.json()["candidates"][0]["content"]["parts"][0]["text"]
    assert answer in values


async def closed_by(url: str, frames: list[str], **connect: Any) -> tuple[int, str]:
    async with websockets.connect(url, max_size=None, **connect) as ws:
        for frame in frames:
            await ws.send(frame)
        try:
            async with asyncio.timeout(60):
                while True:
                    await ws.recv()
        except websockets.ConnectionClosed as closed:
            assert closed.rcvd is not None, "the server dropped the connection without a close"
            return closed.rcvd.code, closed.rcvd.reason
    raise AssertionError("unreachable")


def bad_setup() -> str:
    config = {"responseMimeType": "application/json", "responseJsonSchema": EMPTY_ENUM}
    return json.dumps({"setup": {"model": f"models/{FAST_MODEL}", "generationConfig": config}})


async def test_the_schema_in_a_live_setup_closes_1007(server: Server) -> None:
    url = f"ws://127.0.0.1:{server.port}{WS.format(version='v1beta')}"
    code, reason = await closed_by(url, [bad_setup()])
    assert code == 1007 and "enum" in reason
    alive(server)


async def test_the_schema_through_an_ephemeral_token_that_locks_only_the_model(
    server: Server,
) -> None:
    token = httpx.post(
        f"{server.base_url}/v1alpha/auth_tokens",
        json={
            "uses": 1,
            "bidiGenerateContentSetup": {"model": f"models/{FAST_MODEL}"},
            "fieldMask": "model",  # the rest of the setup is the browser's to choose
        },
        timeout=30,
    ).json()["name"]
    url = f"ws://127.0.0.1:{server.port}{WS.format(version='v1alpha')}Constrained"
    code, reason = await closed_by(url + f"?access_token={token}", [bad_setup()])
    assert code == 1007 and "enum" in reason
    alive(server)


async def test_a_4_mb_text_frame_does_not_stall_other_clients(server: Server) -> None:
    url = f"ws://127.0.0.1:{server.port}{WS.format(version='v1beta')}"
    setup = json.dumps({"setup": {"model": f"models/{FAST_MODEL}"}})
    frame = json.dumps({"realtimeInput": {"text": "many words " * 380_000}})
    assert len(frame) < 4 * 1024 * 1024
    slowest = 0.0
    done = asyncio.Event()

    async def health() -> None:
        nonlocal slowest
        async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as client:
            while not done.is_set():
                began = time.monotonic()
                assert (await client.get("/healthz")).status_code == 200
                slowest = max(slowest, time.monotonic() - began)
                await asyncio.sleep(0.05)

    polling = asyncio.create_task(health())
    code, reason = await closed_by(url, [setup, frame])
    done.set()
    await polling
    assert code == 1008 and "tokens" in reason  # far past the context: refused, with a reason
    assert slowest < 1.5, f"the server stalled {slowest:.1f} s"  # tokenizing it takes seconds


def test_a_key_in_the_query_is_logged_redacted_as_an_access_line(server: Server) -> None:
    httpx.get(f"{server.base_url}/v1beta/models?key=s3cr3t-in-query", timeout=10)
    httpx.get(f"{server.base_url}/v1beta/models/?key=s3cr3t-in-query", timeout=10)
    time.sleep(0.5)
    log = server.log()
    assert "s3cr3t-in-query" not in log
    assert '"GET /v1beta/models?key=REDACTED HTTP/1.1" 200' in log
    assert "Logging error" not in log
