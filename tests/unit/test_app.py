"""The ASGI app without a model loaded: health, routing errors, auth, body limits."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from flashlive.api.app import build_app
from flashlive.auth import ApiKeys
from flashlive.engine.llamacpp import LlamaCppOptions
from flashlive.generation.service import GenerationService
from flashlive.live.services import LiveLimits, LiveServices, Perception
from flashlive.models import BUILTIN_MODELS, ModelManager


def client(tmp_path: Path, keys: frozenset[str] = frozenset()) -> httpx.AsyncClient:
    models = ModelManager(list(BUILTIN_MODELS), models_dir=tmp_path, options=LlamaCppOptions())
    service = GenerationService(models, output_token_limit=64)
    app = build_app(
        models=models,
        service=service,
        keys=ApiKeys(keys),
        default_model=BUILTIN_MODELS[0].id,
        max_request_bytes=2048,
        context_size=512,
        live=LiveServices(models, service, Perception(), LiveLimits()),
    )
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")


async def test_health_is_503_until_the_model_is_loaded(tmp_path: Path) -> None:
    async with client(tmp_path) as c:
        response = await c.get("/healthz")
    assert response.status_code == 503
    assert response.json()["status"] == "loading"


async def test_models_are_listed_without_loading_them(tmp_path: Path) -> None:
    async with client(tmp_path) as c:
        page = (await c.get("/v1beta/models", params={"pageSize": 1})).json()
        rest = (await c.get("/v1beta/models", params={"pageToken": page["nextPageToken"]})).json()
    names = [m["name"] for m in page["models"] + rest["models"]]
    assert names == [f"models/{s.id}" for s in BUILTIN_MODELS]
    assert "nextPageToken" not in rest
    assert page["models"][0]["inputTokenLimit"] == 512


@pytest.mark.parametrize(
    ("method", "path", "code", "status"),
    [
        ("GET", "/nowhere", 404, "NOT_FOUND"),
        ("DELETE", "/v1beta/models", 400, "INVALID_ARGUMENT"),
        ("GET", "/v1beta/models/x:generateContent", 404, "NOT_FOUND"),
        ("GET", "/v1beta/models?pageSize=abc", 400, "INVALID_ARGUMENT"),
    ],
)
async def test_routing_errors_use_the_gemini_shape(
    tmp_path: Path, method: str, path: str, code: int, status: str
) -> None:
    async with client(tmp_path) as c:
        response = await c.request(method, path)
    assert response.status_code == code
    assert response.json()["error"]["status"] == status


async def test_body_over_the_limit_is_413_before_any_model_work(tmp_path: Path) -> None:
    async with client(tmp_path) as c:
        response = await c.post(
            "/v1beta/models/gemma-3-270m:generateContent", content=b"{" + b" " * 4096 + b"}"
        )
    assert response.status_code == 413
    assert "2048-byte limit" in response.json()["error"]["message"]


async def test_keys_guard_everything_but_health(tmp_path: Path) -> None:
    async with client(tmp_path, frozenset({"k"})) as c:
        assert (await c.get("/healthz")).status_code == 503
        assert (await c.get("/v1beta/models")).status_code == 401
        assert (await c.get("/v1beta/models", headers={"x-goog-api-key": "x"})).status_code == 403
        assert (await c.get("/v1beta/models?key=k")).status_code == 200


def test_route_labels_name_each_resource_without_ids() -> None:
    from flashlive.api.metrics import route_label

    assert route_label("POST", "/v1beta/cachedContents") == "cachedContents.create"
    assert route_label("GET", "/v1/cachedContents") == "cachedContents.list"
    assert route_label("GET", "/v1beta/cachedContents/0123abcd") == "cachedContents.get"
    assert route_label("PATCH", "/v1beta/cachedContents/0123abcd") == "cachedContents.update"
    assert route_label("DELETE", "/v1alpha/cachedContents/0123abcd") == "cachedContents.delete"
    live = "/ws/google.ai.generativelanguage.v1beta.GenerativeService.BidiGenerateContent"
    assert route_label("GET", live) == "live"
