"""Bad input through the whole ASGI app (no model loaded): a Gemini 400, never a 500.

Every case here was a 500, a crash or a leak once; each is decided before a model is touched.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from flashlive.api.app import build_app
from flashlive.auth import ApiKeys
from flashlive.cache.registry import CacheRegistry
from flashlive.engine.llamacpp import LlamaCppOptions
from flashlive.generation.service import GenerationService
from flashlive.live.services import LiveLimits, LiveServices, Perception
from flashlive.models import BUILTIN_MODELS, ModelManager

MODEL = BUILTIN_MODELS[0].id
GENERATE = f"/v1beta/models/{MODEL}:generateContent"
COUNT = f"/v1beta/models/{MODEL}:countTokens"


def client(tmp_path: Path, keys: frozenset[str] = frozenset()) -> httpx.AsyncClient:
    models = ModelManager(list(BUILTIN_MODELS), models_dir=tmp_path, options=LlamaCppOptions())
    service = GenerationService(models, output_token_limit=64)
    app = build_app(
        models=models,
        service=service,
        keys=ApiKeys(keys),
        default_model=MODEL,
        max_request_bytes=1 << 20,
        context_size=512,
        live=LiveServices(models, service, Perception(), LiveLimits()),
        caches=CacheRegistry(tmp_path / "data", min_tokens=0),
    )
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")


def text_body(extra: str = "") -> str:
    return '{"contents": [{"parts": [{"text": "hi"}]}]' + extra + "}"


@pytest.mark.parametrize(
    ("path", "raw", "words"),
    [
        (COUNT, '{"contents": [{"parts": [{"text": "\\ud800"}]}]}', "surrogate"),
        (GENERATE, text_body(', "systemInstruction": {"parts": [{"text": "\\udfff"}]}'), "surro"),
        (GENERATE, text_body(', "generationConfig": {"candidateCount": 1' + "1" * 29 + "}"), "ra"),
        (GENERATE, text_body(', "generationConfig": {"logprobs": 1' + "1" * 29 + "}"), "range"),
        (GENERATE, text_body(', "generationConfig": {"topK": 2147483648}'), "topK"),
        (GENERATE, text_body(', "generationConfig": {"seed": 99999999999}'), "seed"),
        (GENERATE, text_body(', "generationConfig": {"maxOutputTokens": 4294967296}'), "maxOut"),
        (GENERATE, text_body(', "generationConfig": {"temperature": NaN}'), "temperature"),
        (GENERATE, "[" * 10_000 + "]" * 10_000, "deeper"),
        ("/v1beta/cachedContents", "[" * 10_000 + "]" * 10_000, "deeper"),
        ("/v1beta/cachedContents", '{"a":' * 10_000 + "1" + "}" * 10_000, "deeper"),
        ("/v1alpha/auth_tokens", '{"uses": 1' + "0" * 40 + "}", "range"),
    ],
)
async def test_bad_bodies_are_400_before_any_model_work(
    tmp_path: Path, path: str, raw: str, words: str
) -> None:
    async with client(tmp_path) as c:
        response = await c.post(path, content=raw.encode("utf-8", "surrogatepass"))
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["status"] == "INVALID_ARGUMENT" and error["code"] == 400
    assert words in error["message"]


async def test_a_large_body_is_parsed_and_refused_the_same_way(tmp_path: Path) -> None:
    padding = "x" * (200 * 1024)  # past the size parsed on the event loop
    raw = '{"contents": [{"parts": [{"text": "' + padding + '\\ud800"}]}]}'
    async with client(tmp_path) as c:
        response = await c.post(COUNT, content=raw)
    assert response.status_code == 400 and "surrogate" in response.json()["error"]["message"]


async def test_superscript_content_length_is_not_a_500(tmp_path: Path) -> None:
    async with client(tmp_path) as c:
        response = await c.post(
            COUNT, content=b"{}", headers={"content-length": "\u00b2".encode("latin-1")}
        )
    assert response.status_code != 500
