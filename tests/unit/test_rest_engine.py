"""REST routes and the generation service over a scripted engine.

The routes and the service are the real ones; only the engine is a double: one that decodes a
few pieces and then, when told to, fails as a crashed decode would.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from scripted import MODEL, FakeEngine, Script, models_over

from flashlive.api.app import build_app
from flashlive.auth import ApiKeys
from flashlive.generation.service import GenerationService
from flashlive.live.services import LiveLimits, LiveServices, Perception

BODY = {"contents": [{"role": "user", "parts": [{"text": "Count to ten."}]}]}


def app_with(tmp_path: Path, engine: FakeEngine, **spec: Any) -> httpx.AsyncClient:
    models = models_over(tmp_path, engine, **spec)
    service = GenerationService(models, output_token_limit=64)
    app = build_app(
        models=models,
        service=service,
        keys=ApiKeys(frozenset()),
        default_model=MODEL,
        max_request_bytes=4096,
        live=LiveServices(models, service, Perception(), LiveLimits()),
    )
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")


async def stream(client: httpx.AsyncClient, query: str = "") -> httpx.Response:
    return await client.post(f"/v1beta/models/{MODEL}:streamGenerateContent{query}", json=BODY)


async def test_a_json_array_stream_that_fails_ends_with_an_error_element(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    engine = FakeEngine([Script(["One,", " two,"], RuntimeError("decode failed"))])
    async with app_with(tmp_path, engine) as client:
        with caplog.at_level(logging.ERROR, logger="flashlive.api.errors"):
            response = await stream(client)
    assert response.status_code == 200  # the status line left with the first chunk
    chunks = json.loads(response.text)  # still one well-formed array
    assert "".join(c["candidates"][0]["content"]["parts"][0]["text"] for c in chunks[:-1])
    assert all("finishReason" not in c["candidates"][0] for c in chunks[:-1])
    assert chunks[-1] == {
        "error": {
            "code": 500,
            "message": "internal error; the server log has the details",
            "status": "INTERNAL",
        }
    }
    failed = [r for r in caplog.records if "failed" in r.getMessage()]
    assert failed and failed[0].exc_info is not None
    assert chunks[0]["responseId"] in failed[0].getMessage()


async def test_an_sse_stream_that_fails_ends_with_an_error_event(tmp_path: Path) -> None:
    engine = FakeEngine([Script(["One,"], RuntimeError("decode failed"))])
    async with app_with(tmp_path, engine) as client:
        response = await stream(client, "?alt=sse")
    events = [json.loads(line[6:]) for line in response.text.splitlines() if line]
    assert events[-1]["error"]["status"] == "INTERNAL"
    assert "candidates" in events[0]


async def test_a_stream_that_completes_has_no_error_element(tmp_path: Path) -> None:
    async with app_with(tmp_path, FakeEngine([["One."]])) as client:
        response = await stream(client)
    chunks: list[dict[str, Any]] = json.loads(response.text)
    assert not any("error" in c for c in chunks)
    assert chunks[-1]["candidates"][0]["finishReason"] == "STOP"


def test_the_sdk_raises_on_an_error_element() -> None:
    """google-genai reads each streamed object and raises on one that is an error."""
    from google.genai import _api_client, errors

    failure = {"error": {"code": 500, "message": "boom", "status": "INTERNAL"}}
    response = _api_client.HttpResponse({}, [json.dumps({"candidates": []}), json.dumps(failure)])
    client = SimpleNamespace(_request=lambda *a, **k: response, _build_request=lambda *a: None)
    chunks = _api_client.BaseApiClient.request_streamed(client, "POST", "x", {})  # type: ignore[arg-type]
    assert json.loads(next(chunks).body or "{}") == {"candidates": []}
    with pytest.raises(errors.ServerError, match="boom"):
        next(chunks)


async def test_a_request_hotter_than_the_models_max_temperature_is_refused(tmp_path: Path) -> None:
    engine = FakeEngine([["Hi."], ["Hi."]])
    async with app_with(tmp_path, engine, max_temperature=1.0) as client:
        model = (await client.get(f"/v1beta/models/{MODEL}")).json()
        assert model["maxTemperature"] == 1.0
        url = f"/v1beta/models/{MODEL}:generateContent"
        hot = await client.post(url, json={**BODY, "generationConfig": {"temperature": 1.5}})
        assert hot.status_code == 400
        assert "at most 1" in hot.json()["error"]["message"]
        ok = await client.post(url, json={**BODY, "generationConfig": {"temperature": 1.0}})
        assert ok.status_code == 200
