"""Wire-level behaviour (errors, auth, limits, metrics, cancellation, TLS) with plain HTTP."""

from __future__ import annotations

import asyncio
import json
import re
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from conftest import FAST_MODEL, Server, free_port, start_server, stop_server
from google import genai
from google.genai import errors, types

GENERATE = f"/v1beta/models/{FAST_MODEL}:generateContent"
STREAM = f"/v1beta/models/{FAST_MODEL}:streamGenerateContent?alt=sse"
HELLO = {"contents": [{"role": "user", "parts": [{"text": "Hello"}]}]}
LONG = {
    "contents": [{"role": "user", "parts": [{"text": "Write a very long story about the sea."}]}],
    "generationConfig": {"maxOutputTokens": 1500, "temperature": 0.9},
}


def assert_gemini_error(response: httpx.Response, code: int, status: str) -> str:
    assert response.status_code == code, response.text
    error = response.json()["error"]
    assert error["code"] == code and error["status"] == status
    assert isinstance(error["message"], str) and error["message"]
    return str(error["message"])


@pytest.fixture(scope="module")
def http(server: Server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.base_url, timeout=120) as client:
        yield client


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (b"{not json", "Invalid JSON"),
        (b"[1, 2]", "JSON object"),
        (b'{"contents": "hello"}', "contents"),
        (b'{"contents": [], "generationConfig": {"temperature": "warm"}}', "temperature"),
        (b'{"contents": [], "bogus": 1}', 'Unknown name "bogus"'),
        (b'{"contents": []}', "contents must not be empty"),
        (b'{"contents": [{"parts": [{"text": "a"}]}], "generationConfig": {"topK": -3}}', "topK"),
    ],
)
def test_bad_requests_are_invalid_argument(http: httpx.Client, body: bytes, fragment: str) -> None:
    response = http.post(GENERATE, content=body, headers={"content-type": "application/json"})
    assert fragment in assert_gemini_error(response, 400, "INVALID_ARGUMENT")


def test_unknown_route_and_model_are_not_found(http: httpx.Client) -> None:
    assert_gemini_error(http.get("/v1beta/nothing"), 404, "NOT_FOUND")
    assert_gemini_error(
        http.post("/v1beta/models/nope:generateContent", json=HELLO), 404, "NOT_FOUND"
    )
    assert_gemini_error(
        http.post(f"/v1beta/models/{FAST_MODEL}:explode", json=HELLO), 404, "NOT_FOUND"
    )


def test_oversized_body_is_413(http: httpx.Client) -> None:
    huge = {"contents": [{"parts": [{"text": "x" * (21 * 1024 * 1024)}]}]}
    assert_gemini_error(http.post(GENERATE, json=huge), 413, "INVALID_ARGUMENT")


def test_prompt_longer_than_the_context_is_rejected(http: httpx.Client) -> None:
    body = {"contents": [{"parts": [{"text": "word " * 6000}]}]}
    message = assert_gemini_error(http.post(GENERATE, json=body), 400, "INVALID_ARGUMENT")
    assert "input tokens" in message


@pytest.mark.parametrize(
    ("extra", "named"),
    [
        ({"store": True}, "store"),
        ({"generationConfig": {"audioTimestamp": True}}, "generationConfig.audioTimestamp"),
        ({"tools": [{"codeExecution": {}}]}, "tools[0].codeExecution"),
    ],
)
def test_a_refused_field_is_a_400_naming_it(
    http: httpx.Client, extra: dict[str, object], named: str
) -> None:
    message = assert_gemini_error(
        http.post(GENERATE, json={**HELLO, **extra}), 400, "INVALID_ARGUMENT"
    )
    assert message.startswith(f"{named} is not supported: ")


def test_fields_accepted_as_no_ops_change_nothing(http: httpx.Client) -> None:
    config = {"maxOutputTokens": 4, "temperature": 0, "seed": 1}
    plain = http.post(GENERATE, json={**HELLO, "generationConfig": config}).json()
    noted = {
        **HELLO,
        "generationConfig": {
            **config,
            "thinkingConfig": {"thinkingBudget": 512},
            "imageConfig": {"aspectRatio": "1:1"},
        },
        "labels": {"team": "x"},
        "serviceTier": "priority",
    }
    same = http.post(GENERATE, json=noted).json()
    assert same["candidates"][0]["content"] == plain["candidates"][0]["content"]
    assert same["usageMetadata"]["promptTokenCount"] == plain["usageMetadata"]["promptTokenCount"]
    assert "thoughtsTokenCount" not in same["usageMetadata"]  # 0, as proto JSON leaves it out


async def test_the_model_resource_lists_what_the_server_does(
    http: httpx.Client, server: Server
) -> None:
    import websockets

    model = http.get(f"/v1beta/models/{FAST_MODEL}").json()
    assert model["version"] == "3" and model["maxTemperature"] == 2.0
    # inputTokenLimit is the limit the engine enforces: a longer prompt's refusal names it.
    body = {"contents": [{"parts": [{"text": "word " * 6000}]}]}
    refused = http.post(GENERATE, json=body).json()["error"]["message"]
    assert f"takes at most {model['inputTokenLimit']} input tokens" in refused
    methods = model["supportedGenerationMethods"]
    assert set(methods) == {
        "generateContent",
        "streamGenerateContent",
        "countTokens",
        "createCachedContent",
        "bidiGenerateContent",
    }
    small = {**HELLO, "generationConfig": {"maxOutputTokens": 2}}
    for method in ("generateContent", "streamGenerateContent", "countTokens"):
        body = HELLO if method == "countTokens" else small
        served = http.post(f"/v1beta/models/{FAST_MODEL}:{method}", json=body)
        assert served.status_code == 200, (method, served.text)
    assert http.post(f"/v1beta/models/{FAST_MODEL}:embedContent", json=HELLO).status_code == 404
    cache = {
        "model": f"models/{FAST_MODEL}",
        "systemInstruction": {"parts": [{"text": "A long rule. " * 60}]},
    }
    assert http.post("/v1beta/cachedContents", json=cache).status_code == 200
    path = "/ws/google.ai.generativelanguage.v1beta.GenerativeService.BidiGenerateContent"
    async with websockets.connect(server.base_url.replace("http", "ws") + path) as ws:
        await ws.send(json.dumps({"setup": {"model": f"models/{FAST_MODEL}"}}))
        assert "setupComplete" in await ws.recv()


def test_stream_without_sse_is_a_json_array(http: httpx.Client) -> None:
    body = {**HELLO, "generationConfig": {"maxOutputTokens": 8}}
    response = http.post(f"/v1beta/models/{FAST_MODEL}:streamGenerateContent", json=body)
    chunks = response.json()
    assert isinstance(chunks, list) and len(chunks) >= 2
    assert chunks[-1]["usageMetadata"]["candidatesTokenCount"] >= 1


def test_count_tokens_accepts_a_full_generate_request(http: httpx.Client) -> None:
    request = {**HELLO, "systemInstruction": {"parts": [{"text": "Be brief."}]}}
    counted = http.post(
        f"/v1beta/models/{FAST_MODEL}:countTokens", json={"generateContentRequest": request}
    ).json()
    generated = http.post(
        GENERATE, json={**request, "generationConfig": {"maxOutputTokens": 3}}
    ).json()
    assert counted["totalTokens"] == generated["usageMetadata"]["promptTokenCount"]
    plain = http.post(f"/v1beta/models/{FAST_MODEL}:countTokens", json=HELLO).json()
    assert plain["totalTokens"] < counted["totalTokens"]


def metric(text: str, name: str, **labels: str) -> float:
    """The value of the sample `name` whose labels include `labels` (Prometheus text format)."""
    for line in text.splitlines():
        found = re.match(r"^(\w+)(?:\{(.*)\})? (\S+)$", line)
        if not found or found.group(1) != name:
            continue
        have = dict(re.findall(r'(\w+)="([^"]*)"', found.group(2) or ""))
        if all(have.get(k) == v for k, v in labels.items()):
            return float(found.group(3))
    raise AssertionError(f"{name} {labels} not in metrics")


def test_metrics_count_requests_ttft_and_tokens(http: httpx.Client) -> None:
    http.post(GENERATE, json={**HELLO, "generationConfig": {"maxOutputTokens": 4}})
    http.post("/v1beta/models/nope:generateContent", json=HELLO)
    text = http.get("/metrics").text
    assert metric(text, "flashlive_requests_total", route="generateContent", code="200") >= 1
    assert metric(text, "flashlive_requests_total", route="generateContent", code="404") >= 1
    assert metric(text, "flashlive_time_to_first_token_seconds_count", model=FAST_MODEL) >= 1
    assert metric(text, "flashlive_tokens_generated_total", model=FAST_MODEL) >= 1
    assert metric(text, "flashlive_model_loaded", model=FAST_MODEL) == 1


async def test_client_disconnect_cancels_generation_within_100ms(server: Server) -> None:
    async with httpx.AsyncClient(base_url=server.base_url, timeout=60) as monitor:

        async def active() -> float:
            text = (await monitor.get("/metrics")).text
            return metric(text, "flashlive_generations_active", model=FAST_MODEL)

        async with (
            httpx.AsyncClient(base_url=server.base_url, timeout=60) as client,
            client.stream("POST", STREAM, json=LONG) as response,
        ):
            assert response.status_code == 200
            received = 0
            async for line in response.aiter_lines():
                received += line.startswith("data:")
                if received == 5:
                    break
            assert await active() == 1
            closed = time.perf_counter()
        # The client is gone: the generation must stop by itself, promptly.
        while await active() != 0:
            assert time.perf_counter() - closed < 2, "generation kept running"
            await asyncio.sleep(0.005)
        stopped_after = time.perf_counter() - closed
        before = metric(
            (await monitor.get("/metrics")).text,
            "flashlive_tokens_generated_total",
            model=FAST_MODEL,
        )
    assert stopped_after < 0.1, f"generation stopped {stopped_after * 1000:.0f} ms after disconnect"
    del before


@pytest.mark.parametrize("path", [GENERATE, STREAM])
async def test_client_leaving_during_a_long_prefill_frees_the_engine(
    server: Server, path: str
) -> None:
    text = " ".join(f"Entry {i}: the tide log of the old harbour." for i in range(150))
    body = {"contents": [{"parts": [{"text": text}]}], "generationConfig": {"maxOutputTokens": 5}}
    async with httpx.AsyncClient(base_url=server.base_url, timeout=60) as monitor:

        async def active() -> float:
            return metric(
                (await monitor.get("/metrics")).text,
                "flashlive_generations_active",
                model=FAST_MODEL,
            )

        async with httpx.AsyncClient(base_url=server.base_url, timeout=60) as client:
            request = asyncio.ensure_future(client.post(path, json=body))
            async with asyncio.timeout(10):
                while await active() == 0:
                    await asyncio.sleep(0.01)
            await asyncio.sleep(0.3)  # inside a prefill of ~2000 tokens (seconds long)
            assert not request.done()
            request.cancel()
        left = time.perf_counter()
        while await active() != 0:
            assert time.perf_counter() - left < 3, "the prefill ran on for nobody"
            await asyncio.sleep(0.01)
    assert time.perf_counter() - left < 1.0


def test_tls_listener_with_the_local_ca(server: Server) -> None:
    ca = subprocess.run(
        [sys.executable, "-m", "flashlive.cli", "ca-path", "--data-dir", str(server.data_dir)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert Path(ca).is_file()
    context = ssl.create_default_context(cafile=ca)
    client = genai.Client(
        api_key="any",
        http_options=types.HttpOptions(
            base_url=server.tls_url,
            client_args={"verify": context},
            async_client_args={"verify": context},
        ),
    )
    response = client.models.generate_content(
        model=FAST_MODEL, contents="Hi", config=types.GenerateContentConfig(max_output_tokens=3)
    )
    assert response.usage_metadata is not None
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{server.tls_url}/healthz")  # an untrusting client refuses the local CA


@pytest.fixture(scope="module")
def keyed_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    keys_file = tmp_path_factory.mktemp("keys") / "keys.txt"
    keys_file.write_text("# comment\nfile-key\n")
    srv = start_server(
        tmp_path_factory.mktemp("keyed"),
        env={"FLASHLIVE_API_KEYS": "env-key-1,env-key-2"},
        args=("--api-keys-file", str(keys_file), "--max-queued", "1", "--slots", "1"),
    )
    yield srv
    stop_server(srv)


def test_api_keys_are_enforced(keyed_server: Server) -> None:
    url = keyed_server.base_url
    assert httpx.get(f"{url}/healthz").status_code == 200
    assert_gemini_error(httpx.get(f"{url}/v1beta/models"), 401, "UNAUTHENTICATED")
    assert_gemini_error(httpx.get(f"{url}/metrics"), 401, "UNAUTHENTICATED")
    bad = httpx.get(f"{url}/v1beta/models", headers={"x-goog-api-key": "wrong"})
    assert_gemini_error(bad, 403, "PERMISSION_DENIED")
    assert httpx.get(f"{url}/v1beta/models?key=env-key-2").status_code == 200
    assert (
        httpx.get(f"{url}/v1beta/models", headers={"x-goog-api-key": "file-key"}).status_code == 200
    )
    good = genai.Client(api_key="env-key-1", http_options=types.HttpOptions(base_url=url))
    assert good.models.count_tokens(model=FAST_MODEL, contents="hello").total_tokens
    wrong = genai.Client(api_key="nope", http_options=types.HttpOptions(base_url=url))
    with pytest.raises(errors.ClientError) as info:
        wrong.models.count_tokens(model=FAST_MODEL, contents="hello")
    assert info.value.code == 403


async def test_a_full_queue_answers_429_with_a_retry_hint(keyed_server: Server) -> None:
    headers = {"x-goog-api-key": "env-key-1"}
    async with httpx.AsyncClient(base_url=keyed_server.base_url, headers=headers, timeout=120) as c:
        body = {**LONG, "generationConfig": {"maxOutputTokens": 40, "temperature": 0.9}}
        responses = await asyncio.gather(*(c.post(GENERATE, json=body) for _ in range(4)))
    codes = sorted(r.status_code for r in responses)
    assert codes.count(200) >= 2 and 429 in codes, codes
    refused = next(r for r in responses if r.status_code == 429)
    assert_gemini_error(refused, 429, "RESOURCE_EXHAUSTED")
    assert int(refused.headers["retry-after"]) >= 1


def test_refuses_to_serve_open_on_a_public_interface(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "flashlive.cli", "serve", "--host", "0.0.0.0",
         "--port", str(free_port()), "--data-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode != 0
    assert "refusing to serve without API keys" in result.stderr


def test_any_gguf_file_can_be_served_by_path(tmp_path: Path, server: Server) -> None:
    source = next(Path.home().glob(".cache/flashlive/models/gemma-3-270m*.gguf"))
    custom = tmp_path / "my-model.gguf"
    custom.symlink_to(source)
    srv = start_server(tmp_path / "srv", model=str(custom))
    try:
        client = genai.Client(api_key="any", http_options=types.HttpOptions(base_url=srv.base_url))
        assert "models/my-model" in {m.name for m in client.models.list()}
        response = client.models.generate_content(
            model="my-model",
            contents="What is the capital of France?",
            config=types.GenerateContentConfig(temperature=0, max_output_tokens=20),
        )
        assert "paris" in (response.text or "").lower()
    finally:
        stop_server(srv)
