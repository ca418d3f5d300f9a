"""Gemini model names, answered through --model-alias by a real server (REST and Live)."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
import websockets
from conftest import FAST_MODEL, Server, start_server, stop_server
from google import genai
from google.genai import types

LIVE_PATH = "/ws/google.ai.generativelanguage.v1beta.GenerativeService.BidiGenerateContent"


@pytest.fixture(scope="module")
def aliased(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = start_server(
        tmp_path_factory.mktemp("aliases"), args=("--model-alias", f"gemini-*={FAST_MODEL}")
    )
    yield server
    stop_server(server)


def test_rest_calls_to_a_gemini_name_are_answered_by_the_alias_target(aliased: Server) -> None:
    client = genai.Client(api_key="k", http_options=types.HttpOptions(base_url=aliased.base_url))
    config = types.GenerateContentConfig(max_output_tokens=6, temperature=0)
    answer = client.models.generate_content(
        model="gemini-2.5-flash", contents="Say hi.", config=config
    )
    assert answer.text and answer.model_version == FAST_MODEL
    chunks = list(
        client.models.generate_content_stream(
            model="gemini-2.5-flash", contents="Say hi.", config=config
        )
    )
    assert {c.model_version for c in chunks} == {FAST_MODEL}
    counted = client.models.count_tokens(model="gemini-2.5-flash", contents="Say hi.")
    assert counted.total_tokens == answer.usage_metadata.prompt_token_count  # type: ignore[union-attr]
    model = client.models.get(model="gemini-2.5-flash")
    assert model.name == "models/gemini-2.5-flash"
    assert model.description and f"models/{FAST_MODEL}" in model.description


async def test_a_live_session_opened_on_a_gemini_name_answers(aliased: Server) -> None:
    url = aliased.base_url.replace("http", "ws") + LIVE_PATH
    async with websockets.connect(url) as ws:
        setup = {"model": "models/gemini-3.8-live", "generationConfig": {"maxOutputTokens": 6}}
        await ws.send(json.dumps({"setup": setup}))
        assert "setupComplete" in json.loads(await ws.recv())
        await ws.send(json.dumps({"realtimeInput": {"text": "Say hi."}}))
        text = ""
        while True:
            content = json.loads(await ws.recv()).get("serverContent", {})
            text += "".join(
                p.get("text", "") for p in content.get("modelTurn", {}).get("parts", [])
            )
            if content.get("turnComplete"):
                break
    assert text.strip()
