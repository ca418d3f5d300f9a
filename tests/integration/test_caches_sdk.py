"""cachedContents through the official Python SDK (`client.caches.*`) against a real server.

The server is assembled here: the cachedContents and model routes with a real model behind them,
served by uvicorn on a loopback port from a thread.
"""

from __future__ import annotations

import asyncio
import hashlib
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
import uvicorn
from conftest import FAST_MODEL, free_port
from google import genai
from google.genai import errors, types
from starlette.applications import Starlette
from starlette.requests import Request

from flashlive.api.caches import CachesApi, prefix_of
from flashlive.api.metrics import Metrics
from flashlive.api.rest import RestApi
from flashlive.cache.registry import CacheRegistry
from flashlive.config import Settings
from flashlive.engine.llamacpp import LlamaCppOptions
from flashlive.generation.service import GenerationService
from flashlive.models import BUILTIN_MODELS, ModelManager

MIN_TOKENS = 100  # above the 67 tokens "hi" renders to on gemma-3-270m (its preamble)
CONTEXT = 4096
DOCUMENT = (
    "The lighthouse keeper's log, spring season. The lamp was lit at dusk each day and trimmed "
    "at midnight. Fog came in from the west on most mornings and lifted by ten. Two fishing "
    "boats, the Marta and the Grey Heron, passed the point daily; a cargo ship anchored in the "
    "bay for three nights while waiting for the tide. The keeper repainted the railings, "
    "replaced a cracked pane in the lantern room and counted forty-one seals on the north rocks."
)


def owner_of_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def owner_of(request: Request) -> str:
    return owner_of_key(request.headers.get("x-goog-api-key", ""))


@dataclass
class Served:
    port: int
    data_dir: Path
    registry: CacheRegistry | None = None
    server: uvicorn.Server | None = None
    ready: threading.Event = field(default_factory=threading.Event)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


async def serve(served: Served) -> None:
    models = ModelManager(
        list(BUILTIN_MODELS),
        models_dir=Settings().models_dir,
        options=LlamaCppOptions(context_size=CONTEXT),
    )
    service = GenerationService(models, output_token_limit=256)
    served.registry = CacheRegistry(served.data_dir, min_tokens=MIN_TOKENS)
    caches = CachesApi(served.registry, service, models, owner_of, max_request_bytes=1 << 20)
    rest = RestApi(
        models,
        service,
        Metrics(models),
        max_request_bytes=1 << 20,
        caches=caches.resolver,
    )
    app = Starlette(routes=[*caches.routes(), *rest.routes()])
    config = uvicorn.Config(
        app, host="127.0.0.1", port=served.port, lifespan="off", log_level="warning"
    )
    served.server = uvicorn.Server(config)
    served.ready.set()
    try:
        await served.server.serve()
    finally:
        await models.aclose()


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    served = Served(free_port(), tmp_path_factory.mktemp("caches"))
    thread = threading.Thread(target=asyncio.run, args=(serve(served),), daemon=True)
    thread.start()
    assert served.ready.wait(30)
    deadline = time.monotonic() + 60
    while not (served.server and served.server.started):
        assert time.monotonic() < deadline, "the test server did not start"
        time.sleep(0.05)
    yield served
    served.server.should_exit = True
    thread.join(30)


def client(served: Served, key: str = "alice", version: str | None = None) -> genai.Client:
    options = types.HttpOptions(base_url=served.base_url, api_version=version)
    return genai.Client(api_key=key, http_options=options)


def create(c: genai.Client, **config: object) -> types.CachedContent:
    config.setdefault("contents", [DOCUMENT])
    return c.caches.create(
        model=FAST_MODEL,
        config=types.CreateCachedContentConfig(**config),  # type: ignore[arg-type]
    )


def test_create_get_update_delete(served: Served) -> None:
    c = client(served)
    made = create(c, display_name="log", ttl="300s")
    assert made.name and made.name.startswith("cachedContents/")
    assert made.model == f"models/{FAST_MODEL}"
    assert made.display_name == "log"
    assert made.create_time and made.update_time and made.expire_time
    assert made.create_time.tzinfo is not None
    assert made.expire_time - made.create_time == timedelta(seconds=300)
    assert made.usage_metadata and made.usage_metadata.total_token_count
    # The cached prefix is counted the way a generation renders it: as :countTokens does.
    counted = c.models.count_tokens(model=FAST_MODEL, contents=[DOCUMENT])
    assert made.usage_metadata.total_token_count == counted.total_tokens

    assert c.caches.get(name=made.name) == made

    longer = c.caches.update(name=made.name, config=types.UpdateCachedContentConfig(ttl="7200s"))
    assert longer.update_time and longer.expire_time
    assert longer.expire_time - longer.update_time == timedelta(hours=2)
    assert longer.create_time == made.create_time
    at = datetime.now(UTC).replace(microsecond=0) + timedelta(days=1)
    moved = c.caches.update(name=made.name, config=types.UpdateCachedContentConfig(expire_time=at))
    assert moved.expire_time == at

    c.caches.delete(name=made.name)
    with pytest.raises(errors.ClientError) as gone:
        c.caches.get(name=made.name)
    assert gone.value.code == 404


def test_the_cached_prefix_is_kept_for_generation(served: Served) -> None:
    c = client(served)
    made = create(c, system_instruction="Answer from the log.", ttl="300s")
    assert served.registry is not None and made.name
    counted = c.models.count_tokens(model=FAST_MODEL, contents=[DOCUMENT]).total_tokens or 0
    assert made.usage_metadata and (made.usage_metadata.total_token_count or 0) > counted
    prefix = prefix_of(served.registry.get(owner_of_key("alice"), made.name.split("/")[1]))
    assert prefix.model == FAST_MODEL
    assert prefix.contents[0].parts[0].text == DOCUMENT
    assert prefix.system_instruction is not None
    assert prefix.system_instruction.parts[0].text == "Answer from the log."


WEATHER = types.FunctionDeclaration(
    name="get_weather",
    description="Current weather for a city. " + DOCUMENT,  # long enough to be worth caching
    parameters=types.Schema(
        type=types.Type.OBJECT, properties={"city": types.Schema(type=types.Type.STRING)}
    ),
)


@pytest.mark.parametrize(
    "held",
    [
        {"system_instruction": DOCUMENT + " Answer from the log."},
        {"tools": [types.Tool(function_declarations=[WEATHER])]},
    ],
    ids=["system-instruction", "tools"],
)
def test_a_cache_may_hold_no_contents(served: Served, held: dict[str, object]) -> None:
    c = client(served)
    made = create(c, contents=None, ttl="300s", **held)
    assert made.name and made.usage_metadata
    assert (made.usage_metadata.total_token_count or 0) >= MIN_TOKENS
    question = "How many seals were on the rocks?"
    settings = {"temperature": 0, "max_output_tokens": 8}
    cached = c.models.generate_content(
        model=FAST_MODEL,
        contents=question,
        config=types.GenerateContentConfig(cached_content=made.name, **settings),  # type: ignore[arg-type]
    )
    inline = c.models.generate_content(
        model=FAST_MODEL,
        contents=question,
        config=types.GenerateContentConfig(**held, **settings),  # type: ignore[arg-type]
    )
    assert cached.usage_metadata and inline.usage_metadata
    # The cache's part is in the prompt, and its state was restored rather than recomputed.
    assert cached.usage_metadata.prompt_token_count == inline.usage_metadata.prompt_token_count
    assert (cached.usage_metadata.cached_content_token_count or 0) >= MIN_TOKENS - 10
    assert cached.text == inline.text


def test_list_pages_through_only_my_caches(served: Served) -> None:
    c = client(served, key="lister")
    made = {create(c, ttl="300s").name for _ in range(3)}
    create(client(served, key="someone-else"), ttl="300s")
    pager = c.caches.list(config=types.ListCachedContentsConfig(page_size=2))
    assert len(pager.page) == 2
    assert {cache.name for cache in pager} == made


@pytest.mark.parametrize("version", ["v1beta", "v1alpha"])
def test_other_api_versions(served: Served, version: str) -> None:
    c = client(served, version=version)
    made = create(c, ttl="60s")
    assert made.name
    assert c.caches.get(name=made.name).name == made.name
    c.caches.delete(name=made.name)


def test_a_cache_belongs_to_its_key(served: Served) -> None:
    made = create(client(served, key="owner"), ttl="300s")
    assert made.name
    thief = client(served, key="thief")
    for attempt in (
        lambda: thief.caches.get(name=made.name or ""),
        lambda: thief.caches.update(
            name=made.name or "", config=types.UpdateCachedContentConfig(ttl="1s")
        ),
        lambda: thief.caches.delete(name=made.name or ""),
    ):
        with pytest.raises(errors.ClientError) as refused:
            attempt()
        assert refused.value.code == 404
    assert client(served, key="owner").caches.get(name=made.name).name == made.name


def test_an_expired_cache_is_gone(served: Served) -> None:
    c = client(served)
    made = create(c, ttl="0.5s")
    assert made.name
    time.sleep(0.6)
    with pytest.raises(errors.ClientError) as gone:
        c.caches.get(name=made.name)
    assert gone.value.code == 404
    assert made.name not in {cache.name for cache in c.caches.list()}


def test_too_small_and_unknown_model(served: Served) -> None:
    c = client(served)
    with pytest.raises(errors.ClientError) as small:
        create(c, contents=["hi"])
    assert small.value.code == 400
    assert f"the minimum is {MIN_TOKENS}" in (small.value.message or "")
    with pytest.raises(errors.ClientError) as unknown:
        c.caches.create(
            model="no-such-model", config=types.CreateCachedContentConfig(contents=[DOCUMENT])
        )
    assert unknown.value.code == 404


@pytest.mark.parametrize(
    ("method", "path", "body", "message"),
    [
        ("POST", "/v1beta/cachedContents", b"{", "Invalid JSON payload"),
        ("POST", "/v1beta/cachedContents", b'{"model": "m", "colour": 1}', 'Unknown name "colour"'),
        ("POST", "/v1beta/cachedContents", b'{"model": "m", "ttl": "1h"}', "3600s"),
        ("POST", "/v1/cachedContents", b'{"model": "models/gemma-3-270m"}', "contents"),
        ("GET", "/v1beta/cachedContents?pageSize=abc", b"", "pageSize"),
        ("GET", "/v1beta/cachedContents?pageToken=xyz", b"", "pageToken"),
    ],
)
def test_bad_requests_get_gemini_errors(
    served: Served, method: str, path: str, body: bytes, message: str
) -> None:
    response = httpx.request(method, served.base_url + path, content=body)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["status"] == "INVALID_ARGUMENT"
    assert message in error["message"]


def test_patch_changes_only_the_expiry(served: Served) -> None:
    made = create(client(served), ttl="300s")
    url = f"{served.base_url}/v1beta/{made.name}"
    headers = {"x-goog-api-key": "alice"}
    refused = httpx.patch(url, json={"displayName": "new"}, headers=headers)
    assert refused.status_code == 400
    assert "displayName" in refused.json()["error"]["message"]
    masked = httpx.patch(
        url, params={"updateMask": "ttl"}, json={"ttl": "60s", "name": made.name}, headers=headers
    )
    assert masked.status_code == 200
    assert masked.json()["expireTime"].endswith("Z")
    assert "ttl" not in masked.json() and "contents" not in masked.json()
