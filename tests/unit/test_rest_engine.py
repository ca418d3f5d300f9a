"""REST routes and the generation service over a scripted engine.

The routes and the service are the real ones; only the engine is a double: one that decodes a
few pieces and then, when told to, fails as a crashed decode would.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncGenerator, Sequence
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest

from flashlive.api.app import build_app
from flashlive.auth import ApiKeys
from flashlive.engine import FinishCause, PrefixState, SamplingParams, TokenPiece
from flashlive.engine.base import CancelToken, EngineInfo
from flashlive.engine.llamacpp import LlamaCppOptions
from flashlive.generation.service import GenerationService
from flashlive.live.services import LiveLimits, LiveServices, Perception
from flashlive.models import BUILTIN_MODELS, LoadedModel, ModelManager

MODEL = "gemma-3-270m"  # prompted as plain text: no chat template needed
BODY = {"contents": [{"role": "user", "parts": [{"text": "Count to ten."}]}]}


class FailingEngine:
    """Decodes `pieces`, then raises `failure` (None: finishes normally)."""

    def __init__(self, pieces: list[str], failure: BaseException | None) -> None:
        self.pieces = pieces
        self.failure = failure
        self.info = EngineInfo(MODEL, 512, None, "", "")
        self.cached_prefix: Sequence[int] = []

    def tokenize(self, text: str) -> list[int]:
        return list(range(len(text.split())))

    def count_tokens(self, text: str) -> int:
        return len(self.tokenize(text))

    async def stream(
        self,
        prompt: Sequence[int],
        params: SamplingParams,
        cancel: CancelToken | None = None,
        prefix: PrefixState | None = None,
    ) -> AsyncGenerator[TokenPiece, None]:
        for i, piece in enumerate(self.pieces):
            yield TokenPiece(piece, i)
        if self.failure is not None:
            raise self.failure
        yield TokenPiece("", None, FinishCause.END_OF_TURN)

    async def snapshot(self, tokens: Sequence[int] | None = None) -> PrefixState:
        return PrefixState(MODEL, tuple(tokens or ()), b"")


def app_with(tmp_path: Path, engine: FailingEngine, **spec: Any) -> httpx.AsyncClient:
    specs = [replace(s, **spec) if s.id == MODEL else s for s in BUILTIN_MODELS]
    models = ModelManager(specs, models_dir=tmp_path, options=LlamaCppOptions())
    spec = models.spec(MODEL)
    models._loaded[MODEL] = LoadedModel(spec=spec, engine=engine)  # type: ignore[arg-type]
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
    engine = FailingEngine(["One,", " two,"], RuntimeError("decode failed"))
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
    engine = FailingEngine(["One,"], RuntimeError("decode failed"))
    async with app_with(tmp_path, engine) as client:
        response = await stream(client, "?alt=sse")
    events = [json.loads(line[6:]) for line in response.text.splitlines() if line]
    assert events[-1]["error"]["status"] == "INTERNAL"
    assert "candidates" in events[0]


async def test_a_stream_that_completes_has_no_error_element(tmp_path: Path) -> None:
    async with app_with(tmp_path, FailingEngine(["One."], None)) as client:
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
    engine = FailingEngine(["Hi."], None)
    async with app_with(tmp_path, engine, max_temperature=1.0) as client:
        model = (await client.get(f"/v1beta/models/{MODEL}")).json()
        assert model["maxTemperature"] == 1.0
        url = f"/v1beta/models/{MODEL}:generateContent"
        hot = await client.post(url, json={**BODY, "generationConfig": {"temperature": 1.5}})
        assert hot.status_code == 400
        assert "at most 1" in hot.json()["error"]["message"]
        ok = await client.post(url, json={**BODY, "generationConfig": {"temperature": 1.0}})
        assert ok.status_code == 200
