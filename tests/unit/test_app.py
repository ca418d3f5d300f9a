"""The ASGI app without a model loaded: health, routing errors, auth, body limits."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from flashlive.api.app import build_app
from flashlive.auth import ApiKeys
from flashlive.engine.llamacpp import LlamaCppOptions
from flashlive.generation.service import GenerationService
from flashlive.live.services import LiveLimits, LiveServices, Perception
from flashlive.models import BUILTIN_MODELS, ModelManager


def client(tmp_path: Path, keys: frozenset[str] = frozenset()) -> httpx.AsyncClient:
    options = LlamaCppOptions(context_size=500)  # llama.cpp makes that 512
    models = ModelManager(list(BUILTIN_MODELS), models_dir=tmp_path, options=options)
    service = GenerationService(models, output_token_limit=64)
    app = build_app(
        models=models,
        service=service,
        keys=ApiKeys(keys),
        default_model=BUILTIN_MODELS[0].id,
        max_request_bytes=2048,
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
    first = page["models"][0]
    assert first["inputTokenLimit"] == 511  # the context, less the token an answer needs
    assert first["version"] == BUILTIN_MODELS[0].version
    assert first["maxTemperature"] == BUILTIN_MODELS[0].max_temperature
    # Live is served, caches are not (this app has no cache registry).
    assert first["supportedGenerationMethods"] == [
        "generateContent",
        "streamGenerateContent",
        "countTokens",
        "bidiGenerateContent",
    ]


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
    assert route_label("POST", "/v1alpha/auth_tokens") == "authTokens.create"
    assert route_label("GET", "/v1/cachedContents") == "cachedContents.list"
    assert route_label("GET", "/v1beta/cachedContents/0123abcd") == "cachedContents.get"
    assert route_label("PATCH", "/v1beta/cachedContents/0123abcd") == "cachedContents.update"
    assert route_label("DELETE", "/v1alpha/cachedContents/0123abcd") == "cachedContents.delete"
    live = "/ws/google.ai.generativelanguage.v1beta.GenerativeService.BidiGenerateContent"
    assert route_label("GET", live) == "live"


# --- ephemeral tokens -----------------------------------------------------------------------------

TOKENS_PATH = "/v1alpha/auth_tokens"
WS = "/ws/google.ai.generativelanguage.v1alpha.GenerativeService.BidiGenerateContent"
CONSTRAINED_WS = WS + "Constrained"


def live_app(tmp_path: Path, keys: frozenset[str] = frozenset()) -> Any:
    models = ModelManager(list(BUILTIN_MODELS), models_dir=tmp_path, options=LlamaCppOptions())
    service = GenerationService(models, output_token_limit=64)
    return build_app(
        models=models,
        service=service,
        keys=ApiKeys(keys),
        default_model=BUILTIN_MODELS[0].id,
        max_request_bytes=4096,
        live=LiveServices(models, service, Perception(), LiveLimits()),
    )


async def test_a_key_creates_a_token(tmp_path: Path) -> None:
    async with client(tmp_path, frozenset({"k"})) as c:
        response = await c.post(TOKENS_PATH, headers={"x-goog-api-key": "k"}, json={"uses": 2})
        also_v1beta = await c.post("/v1beta/auth_tokens?key=k", content=b"")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["name"].startswith("auth_tokens/")
    assert body["uses"] == 2 and body["expireTime"] and body["newSessionExpireTime"]
    assert response.headers["cache-control"] == "no-store"
    assert also_v1beta.status_code == 200 and also_v1beta.json()["uses"] == 1


@pytest.mark.parametrize(
    ("headers", "code", "status"),
    [({}, 401, "UNAUTHENTICATED"), ({"x-goog-api-key": "wrong"}, 403, "PERMISSION_DENIED")],
)
async def test_creating_a_token_needs_a_valid_key(
    tmp_path: Path, headers: dict[str, str], code: int, status: str
) -> None:
    async with client(tmp_path, frozenset({"k"})) as c:
        response = await c.post(TOKENS_PATH, headers=headers, json={})
    assert response.status_code == code
    assert response.json()["error"]["status"] == status


@pytest.mark.parametrize(
    ("body", "code", "words"),
    [
        ({"uses": -1}, 400, "uses"),
        ({"expireTime": "2000-01-01T00:00:00Z"}, 400, "expireTime must be in the future"),
        ({"fieldMask": "nonsense"}, 400, "not a field of a Live setup"),
        ({"bidiGenerateContentSetup": {"model": "models/nope"}}, 404, "models/nope"),
    ],
)
async def test_bad_token_requests_get_gemini_errors(
    tmp_path: Path, body: dict[str, Any], code: int, words: str
) -> None:
    async with client(tmp_path) as c:
        response = await c.post(TOKENS_PATH, json=body)
    assert response.status_code == code
    assert words in response.json()["error"]["message"]


@pytest.mark.parametrize("keys", [frozenset(), frozenset({"k"})])
async def test_a_token_is_refused_on_rest_routes(tmp_path: Path, keys: frozenset[str]) -> None:
    async with client(tmp_path, keys) as c:
        name = (await c.post(TOKENS_PATH, params={"key": "k"}, json={"uses": 0})).json()["name"]
        refused = [
            await c.get("/v1beta/models", headers={"x-goog-api-key": name}),
            await c.get("/v1beta/models", params={"access_token": name}),
            await c.get("/v1beta/models", headers={"Authorization": f"Token {name}"}),
            await c.post(TOKENS_PATH, headers={"Authorization": f"Token {name}"}, json={}),
        ]
    for response in refused:
        assert response.status_code == 403
        error = response.json()["error"]
        assert error["status"] == "PERMISSION_DENIED" and error["code"] == 403
        assert "Live API only" in error["message"]


@pytest.mark.filterwarnings("ignore::google.genai.errors.ExperimentalWarning")
async def test_the_sdk_creates_tokens_with_constraints(tmp_path: Path) -> None:
    from google import genai
    from google.genai import types

    transport = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=live_app(tmp_path, frozenset({"k"})))
    )
    sdk = genai.Client(
        api_key="k",
        http_options=types.HttpOptions(
            api_version="v1alpha", base_url="http://test", httpx_async_client=transport
        ),
    )
    plain = await sdk.aio.auth_tokens.create()
    constrained = await sdk.aio.auth_tokens.create(
        config=types.CreateAuthTokenConfig(
            uses=3,
            live_connect_constraints=types.LiveConnectConstraints(
                model=BUILTIN_MODELS[0].id,
                config=types.LiveConnectConfig(system_instruction="Be brief.", temperature=0.2),
            ),
            lock_additional_fields=["max_output_tokens"],
        )
    )
    await transport.aclose()
    assert plain.name and plain.name.startswith("auth_tokens/") and plain.uses == 1
    assert constrained.name and constrained.name != plain.name and constrained.uses == 3


def closed_with(tc: Any, path: str, **kwargs: Any) -> tuple[int, str]:
    from starlette.websockets import WebSocketDisconnect

    with tc.websocket_connect(path, **kwargs) as ws:
        ws.send_json({"setup": {"model": "models/nope"}})
        with pytest.raises(WebSocketDisconnect) as closed:
            ws.receive_text()
    return closed.value.code, closed.value.reason


@pytest.mark.parametrize("keys", [frozenset(), frozenset({"k"})])
def test_live_endpoints_check_tokens(tmp_path: Path, keys: frozenset[str]) -> None:
    from starlette.testclient import TestClient

    with TestClient(live_app(tmp_path, keys)) as tc:
        name = tc.post(TOKENS_PATH, params={"key": "k"}, json={"uses": 0}).json()["name"]
        sdk_headers = {"Authorization": f"Token {name}", "x-goog-api-key": name}

        # The plain endpoint refuses tokens, in either place a client puts them.
        for kwargs in ({"headers": sdk_headers}, {"params": {"access_token": name}}):
            code, reason = closed_with(tc, WS, **kwargs)
            assert code == 1008 and "BidiGenerateContentConstrained" in reason

        # The constrained one refuses unknown tokens...
        code, reason = closed_with(tc, CONSTRAINED_WS + "?access_token=auth_tokens/nope")
        assert (code, reason) == (1008, "ephemeral token not valid: it is unknown or has expired")

        # ...and lets a valid one (or a key) reach the session, which refuses the unknown model.
        for kwargs in (
            {"headers": sdk_headers},
            {"params": {"access_token": name}},
            {"params": {"key": "k"}},
        ):
            code, reason = closed_with(tc, CONSTRAINED_WS, **kwargs)
            assert code == 1008 and "models/nope" in reason, reason


def test_the_constrained_endpoint_still_needs_a_key_or_token(tmp_path: Path) -> None:
    from starlette.testclient import TestClient

    with TestClient(live_app(tmp_path, frozenset({"k"}))) as tc:
        code, reason = closed_with(tc, CONSTRAINED_WS)
    assert code == 1008 and "API key missing" in reason


def test_query_credentials_are_kept_out_of_logs() -> None:
    import logging

    from flashlive.api.keys import RedactCredentials

    record = logging.LogRecord(
        "uvicorn.error", logging.INFO, __file__, 1, '%s - "WebSocket %s" [accepted]',
        ("127.0.0.1:1", f"{CONSTRAINED_WS}?access_token=auth_tokens/s3cret&alt=x"), None,
    )  # fmt: skip
    assert RedactCredentials().filter(record)
    assert "s3cret" not in record.getMessage()
    assert record.getMessage().endswith('?access_token=REDACTED&alt=x" [accepted]')
