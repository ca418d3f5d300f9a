"""Bad input through the whole ASGI app (no model loaded): a Gemini 400, never a 500.

Every case here was a 500, a crash or a leak once; each is decided before a model is touched.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from flashlive.api.app import build_app
from flashlive.api.usage import UsageSetup
from flashlive.auth import ApiKeys
from flashlive.cache.registry import CacheRegistry
from flashlive.engine.llamacpp import LlamaCppOptions
from flashlive.generation.service import GenerationService
from flashlive.ledger.prices import PriceTable
from flashlive.ledger.records import UsageRecord
from flashlive.live.services import LiveLimits, LiveServices, Perception
from flashlive.models import BUILTIN_MODELS, ModelManager
from flashlive.protocol.generate import CountTokensResponse
from flashlive.quota import QuotaLimits, Quotas

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


# --- the edge around the calls: ledger, metrics, redirects, logs ----------------------------------


class RecordingLedger:
    def __init__(self) -> None:
        self.records: list[UsageRecord] = []

    async def record(self, rec: UsageRecord) -> None:
        self.records.append(rec)

    async def summary(self, *args: object, **kwargs: object) -> list[object]:
        return []

    async def close(self) -> None:
        pass


class FailingService(GenerationService):
    """A bug in the generation path: anything but a FlashliveError."""

    async def count_tokens(self, model: str, request: object) -> CountTokensResponse:  # type: ignore[override]
        raise RuntimeError("a bug")


def billed_client(tmp_path: Path, ledger: RecordingLedger) -> httpx.AsyncClient:
    models = ModelManager(list(BUILTIN_MODELS), models_dir=tmp_path, options=LlamaCppOptions())
    app = build_app(
        models=models,
        service=FailingService(models, output_token_limit=64),
        keys=ApiKeys(frozenset()),
        default_model=MODEL,
        max_request_bytes=1 << 20,
        live=LiveServices(
            models, GenerationService(models, output_token_limit=64), Perception(), LiveLimits()
        ),
        usage=UsageSetup(ledger, PriceTable.load(None), Quotas(QuotaLimits())),  # type: ignore[arg-type]
    )
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")


async def test_a_call_that_ends_in_a_500_is_still_in_the_ledger(tmp_path: Path) -> None:
    ledger = RecordingLedger()
    async with billed_client(tmp_path, ledger) as c:
        response = await c.post(COUNT, json={"contents": [{"parts": [{"text": "hi"}]}]})
    assert response.status_code == 500
    assert response.json()["error"]["status"] == "INTERNAL"
    assert [(r.method, r.status, r.model) for r in ledger.records] == [("countTokens", 500, MODEL)]


async def test_metrics_label_only_models_the_server_knows(tmp_path: Path) -> None:
    ledger = RecordingLedger()
    async with billed_client(tmp_path, ledger) as c:
        for i in range(30):
            await c.post(f"/v1beta/models/random-{i}:countTokens", json={"contents": []})
        metrics = (await c.get("/metrics")).text
    assert len(ledger.records) == 30
    assert "random-" not in metrics
    assert 'model="other"' in metrics


@pytest.mark.parametrize("path", ["/v1beta/models/", "/v1beta/models//", "/v1beta//models/"])
async def test_a_trailing_slash_is_served_in_place_never_redirected(
    tmp_path: Path, path: str
) -> None:
    async with client(tmp_path, frozenset({"k1"})) as c:
        response = await c.get(path + "?key=k1", headers={"Host": "evil.example"})
    assert response.status_code == 200, response.text
    assert "location" not in response.headers
    assert response.json()["models"]


def test_an_access_line_with_a_key_in_its_query_is_logged_redacted() -> None:
    import io
    import logging

    from uvicorn.logging import AccessFormatter

    from flashlive.api.keys import RedactCredentials

    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(AccessFormatter('%(client_addr)s - "%(request_line)s" %(status_code)s'))
    logger = logging.getLogger("test.uvicorn.access")
    logger.addHandler(handler)
    logger.addFilter(RedactCredentials())
    logger.propagate = False
    logger.setLevel(logging.INFO)
    errors = io.StringIO()
    handler.handleError = lambda record: errors.write("--- Logging error ---")  # type: ignore[method-assign]
    for query in ("key=s3cret", "access_token=auth_tokens/s3cret&alt=sse"):
        logger.info(
            '%s - "%s %s HTTP/%s" %d',
            "127.0.0.1:5000",
            "GET",
            f"/v1beta/models?{query}",
            "1.1",
            200,
        )
    logger.removeHandler(handler)
    assert errors.getvalue() == ""
    lines = out.getvalue().splitlines()
    assert lines == [
        '127.0.0.1:5000 - "GET /v1beta/models?key=REDACTED HTTP/1.1" 200 OK',
        '127.0.0.1:5000 - "GET /v1beta/models?access_token=REDACTED&alt=sse HTTP/1.1" 200 OK',
    ]
