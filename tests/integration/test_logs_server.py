"""A real server with --log-format json: one JSON object a line, and each request's and Live
session's lines (the engine's, on its worker thread, included) carry their id."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import FAST_MODEL, Server, start_server, stop_server
from google import genai
from google.genai import types

from flashlive.tls import ca_path


@pytest.fixture(scope="module")
def json_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = start_server(
        tmp_path_factory.mktemp("logs"), args=("--log-format", "json", "--log-level", "debug")
    )
    yield srv
    stop_server(srv)


def records(server: Server) -> list[dict[str, Any]]:
    found = []
    for line in server.log().splitlines():
        if line.startswith("{"):
            found.append(json.loads(line))  # a line that opens as JSON is whole JSON
    return found


async def test_ids_on_every_line_of_a_request_and_a_session(
    json_server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = genai.Client(
        api_key="k", http_options=types.HttpOptions(base_url=json_server.base_url)
    )
    answer = client.models.generate_content(
        model=FAST_MODEL,
        contents="Say hi.",
        config=types.GenerateContentConfig(max_output_tokens=4),
    )
    monkeypatch.setenv("SSL_CERT_FILE", str(ca_path(json_server.data_dir)))
    live = genai.Client(api_key="k", http_options=types.HttpOptions(base_url=json_server.tls_url))
    config = types.LiveConnectConfig(response_modalities=["TEXT"], max_output_tokens=4)
    async with live.aio.live.connect(model=FAST_MODEL, config=config) as session:
        await session.send_client_content(
            turns=types.Content(role="user", parts=[types.Part(text="Hi.")]), turn_complete=True
        )
        async for message in session.receive():
            if message.server_content and message.server_content.turn_complete:
                break
    stop_server(json_server)  # every line is written

    lines = records(json_server)
    loggers = {r["logger"] for r in lines}
    assert {"flashlive", "uvicorn.error"} <= loggers  # uvicorn's own lines are JSON too
    text_lines = [
        line
        for line in json_server.log().splitlines()
        if line.startswith(("INFO flashlive", "DEBUG flashlive", "INFO:     "))
    ]
    assert text_lines == []

    decodes = [r for r in lines if r["message"].startswith("decoding ")]
    rest = [r for r in decodes if r.get("request_id") == answer.response_id]
    assert len(rest) == 1 and rest[0]["logger"] == "flashlive.engine.batch"
    opened = next(r for r in lines if r["message"].startswith("live session "))
    session_id = opened["session_id"]
    assert opened["message"].startswith(f"live session {session_id} opened")
    assert any(r.get("session_id") == session_id for r in decodes)  # the engine's, for the turn
