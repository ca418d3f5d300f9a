"""Fuzz: a real server on loopback, attacked as the probing of issue 11 did, bounded in count and
time. Adversarial REST requests (deep nesting, integers past their field, lone surrogates,
schemas that cannot be decoded under, garbage bodies and routes), Live sessions with bad setups
and bad frames, sockets that connect and say nothing, a client that never reads. Afterwards:
no 5xx, no 1011, no connection dropped without a close, no traceback in the server log, and the
process still serving. The tallies (by status and by close code) are printed at the end.

FLASHLIVE_FUZZ_SEED, FLASHLIVE_FUZZ_REST, FLASHLIVE_FUZZ_LIVE and FLASHLIVE_FUZZ_BUDGET_S change
the seed, the counts and the time each phase may take.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import random
import struct
import time
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
import websockets
from conftest import FAST_MODEL, Server, start_server, stop_server
from fuzz_report import publish

pytestmark = pytest.mark.timeout(300)

SEED = int(os.environ.get("FLASHLIVE_FUZZ_SEED", "1103"))
REST_CASES = int(os.environ.get("FLASHLIVE_FUZZ_REST", "800"))
LIVE_SESSIONS = int(os.environ.get("FLASHLIVE_FUZZ_LIVE", "200"))
BUDGET_S = float(os.environ.get("FLASHLIVE_FUZZ_BUDGET_S", "15"))  # each of REST and Live
SETUP_TIMEOUT_S = 1.0
HEADER_TIMEOUT_S = 1.0
SEND_TIMEOUT_S = 2.0
WS_PATH = "/ws/google.ai.generativelanguage.v1beta.GenerativeService.BidiGenerateContent"
MODEL_PATH = f"/v1beta/models/{FAST_MODEL}"
DEEP = '"__DEEP__"'  # where a deep nesting goes into a body's JSON text

Request = tuple[str, str, dict[str, str], bytes]


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = start_server(
        tmp_path_factory.mktemp("fuzz"),
        args=(
            "--live-setup-timeout-s", str(SETUP_TIMEOUT_S),
            "--http-header-timeout-s", str(HEADER_TIMEOUT_S),
            "--live-send-timeout-s", str(SEND_TIMEOUT_S),
            "--max-request-bytes", str(2 << 20),
        ),
    )  # fmt: skip
    yield server
    stop_server(server)


# --- REST cases -----------------------------------------------------------------------------------

HUGE = ["2147483648", "-2147483649", "9223372036854775808", "1" * 30, "1" * 5000, "1e400", "NaN"]
SURROGATE_TEXT = ['"\\ud800"', '"a\\udfffb"', '"\\udbff\\udbff"', '"\\ud83d"']
INT_FIELDS = [
    "topK",
    "seed",
    "candidateCount",
    "maxOutputTokens",
    "logprobs",
    "temperature",
    "topP",
]
BAD_SCHEMAS: list[Any] = [
    {"enum": []},
    {"anyOf": []},
    {"oneOf": []},
    {"type": []},
    {"type": "object", "properties": {'a"b': {"type": "string"}}, "required": ['a"b']},
    {"type": "object", "properties": {"a\nb": {"type": "string"}, "c\\": {"enum": ["\\"]}}},
    {"enum": ['x"y', "new\nline", "back\\slash", "tab\t"]},
    {"type": "string", "pattern": "["},
    {"type": "string", "pattern": "^\\d+$"},
    {"type": "string", "pattern": "(?=a)b"},
    {"type": "string", "pattern": "(a)\\1"},
    {"type": "string", "pattern": "a{99999}"},
    {"type": "string", "pattern": '^["\\\\]+$'},
    {"type": "array", "items": {"type": "string"}, "minItems": 100000000},
    {"type": "string", "maxLength": 10**12},
    {"$ref": "#"},
    {"anyOf": [{"$ref": "#"}, {"type": "null"}]},
    {"$ref": "#/$defs/none"},
    {"$ref": "https://example.com/schema.json"},
    {"type": "integer", "minimum": 10, "maximum": 1},
    {"type": "integer", "enum": ["a"]},
    {"not": {}},
    {"type": "object", "patternProperties": {".*": {}}},
    {"allOf": [{"type": "string"}, {"maxLength": 2}]},
    {"type": "object", "required": ["x"], "properties": {}, "additionalProperties": False},
    {"type": "strin"},
    {"enum": list(range(300))},
    {"type": "string", "format": "date-time"},
    {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]},
    {"type": "string", "enum": ["<start_of_turn>", "[multimodal]"]},
    True,
    False,
    [],
    "string",
]
GEMINI_SCHEMAS: list[Any] = [
    {"type": "OBJECT", "properties": {}},
    {"type": "STRING", "enum": []},
    {"type": "STRING", "enum": ['q"', "a\nb"]},
    {"type": "ARRAY"},
    {"type": "ARRAY", "items": {"type": "STRING"}, "minItems": "99999999999"},
    {"type": "OBJECT", "properties": {"x": {"type": "STRING"}}, "required": ["y"]},
    {"anyOf": []},
    {"type": "STRING", "pattern": "["},
    {"type": "NUMBER", "minimum": 5, "maximum": 1},
    {"type": "NOPE"},
]
ROUTES = [
    ("GET", "/v1beta/models/"),
    ("GET", "/v1beta/models//"),
    ("GET", "/v1beta/models?pageSize=\u00b9"),
    ("GET", "/v1beta/models?pageSize=" + "9" * 5000),
    ("GET", "/v1beta/models?pageToken=-1"),
    ("GET", "/v1beta/models/%F0%9F%98%80"),
    ("GET", "/v1beta/models/" + "x" * 5000),
    ("GET", f"{MODEL_PATH}:generateContent"),
    ("POST", "/v1beta/models/no-such-model:generateContent"),
    ("POST", f"{MODEL_PATH}:nothing"),
    ("POST", f"{MODEL_PATH}:"),
    ("DELETE", "/v1beta/models"),
    ("GET", "/v1beta/cachedContents?pageSize=\u00b2"),
    ("GET", "/v1beta/cachedContents/%00"),
    ("PATCH", "/v1beta/cachedContents/abc?updateMask=nonsense"),
    ("DELETE", "/v1beta/cachedContents/" + "z" * 300),
    ("GET", "/v1beta/usage"),
    ("GET", "/nowhere/\u00e9"),
    ("PUT", "/healthz"),
]


def base_body(rng: random.Random) -> dict[str, Any]:
    body: dict[str, Any] = {
        "contents": [{"role": "user", "parts": [{"text": rng.choice(["Hi.", "Say yes.", "é?"])}]}],
        "generationConfig": {"maxOutputTokens": rng.randint(1, 3)},
    }
    return body


def text_with(body: Any, where: list[Any], literal: str) -> bytes:
    """`body` as JSON with the value at `where` replaced by a raw JSON literal."""
    marker = "__FUZZ_MARKER__"
    node = body
    for key in where[:-1]:
        node = node[key]
    node[where[-1]] = marker
    return json.dumps(body).replace(json.dumps(marker), literal, 1).encode()


def generate(path_action: str = "generateContent") -> tuple[str, str]:
    return "POST", f"{MODEL_PATH}:{path_action}"


def case_deep(rng: random.Random) -> Request:
    depth = rng.choice([65, 200, 990, 5000, 20000])
    kind = rng.choice(["[", "{"])
    inner = (kind * depth + "]" * depth) if kind == "[" else ('{"a":' * depth + "1" + "}" * depth)
    body = base_body(rng)
    spots: list[tuple[list[Any], str, str]] = [
        ([], "POST", f"{MODEL_PATH}:generateContent"),
        (["generationConfig", "responseJsonSchema"], *generate()),
        (["contents", 0, "parts", 0], *generate("countTokens")),
        (["systemInstruction"], *generate()),
        (["model"], "POST", "/v1beta/cachedContents"),
        ([], "POST", "/v1alpha/auth_tokens"),
    ]
    where, method, path = rng.choice(spots)
    if not where:
        return method, path, {}, inner.encode()
    if where == ["contents", 0, "parts", 0]:
        body["contents"].append(
            {"role": "model", "parts": [{"functionCall": {"name": "f", "args": "x"}}]}
        )
        where = ["contents", 1, "parts", 0, "functionCall", "args"]
    return method, path, {}, text_with(body, where, inner)


def case_huge(rng: random.Random) -> Request:
    body = base_body(rng)
    literal = rng.choice(HUGE)
    if rng.random() < 0.2:
        return "POST", "/v1alpha/auth_tokens", {}, f'{{"uses": {literal}}}'.encode()
    if rng.random() < 0.2:
        body["generationConfig"].update(
            responseMimeType="application/json",
            responseSchema={"type": "ARRAY", "items": {"type": "STRING"}, "maxItems": 0},
        )
        where = ["generationConfig", "responseSchema", "maxItems"]
    else:
        where = ["generationConfig", rng.choice(INT_FIELDS)]
    return (
        *generate(rng.choice(["generateContent", "countTokens"])),
        {},
        text_with(body, where, literal),
    )


def case_surrogate(rng: random.Random) -> Request:
    body = base_body(rng)
    literal = rng.choice(SURROGATE_TEXT)
    spots: list[list[Any]] = [
        ["contents", 0, "parts", 0, "text"],
        ["generationConfig", "stopSequences"],
        ["cachedContent"],
        ["model"],
        ["systemInstruction"],
        ["tools"],
        ["generationConfig", "responseJsonSchema"],
        ["labels"],
    ]
    where = rng.choice(spots)
    if where == ["generationConfig", "stopSequences"]:
        body["generationConfig"]["stopSequences"] = ["x"]
        where = [*where, 0]
    elif where == ["systemInstruction"]:
        body["systemInstruction"] = {"parts": [{"text": "x"}]}
        where = ["systemInstruction", "parts", 0, "text"]
    elif where == ["tools"]:
        body["tools"] = [{"functionDeclarations": [{"name": "f", "description": "d"}]}]
        where = ["tools", 0, "functionDeclarations", 0, rng.choice(["name", "description"])]
    elif where == ["generationConfig", "responseJsonSchema"]:
        body["generationConfig"].update(
            responseMimeType="application/json", responseJsonSchema={"enum": ["x"]}
        )
        where = ["generationConfig", "responseJsonSchema", "enum", 0]
    elif where == ["labels"]:
        body["labels"] = {"k": "v"}
        where = ["labels", "k"]
    action = rng.choice(["generateContent", "countTokens", "streamGenerateContent"])
    return *generate(action), {}, text_with(body, where, literal)


def case_schema(rng: random.Random) -> Request:
    body = base_body(rng)
    config = body["generationConfig"]
    style = rng.choice(["json", "gemini", "enum", "any", "any-gemini"])
    if style == "json":
        config.update(
            responseMimeType="application/json", responseJsonSchema=rng.choice(BAD_SCHEMAS)
        )
    elif style == "gemini":
        config.update(
            responseMimeType="application/json", responseSchema=rng.choice(GEMINI_SCHEMAS)
        )
    elif style == "enum":
        values = rng.choice([[], ['a"b', "c\nd"], ["x\\"], ["ok"], [1, 2]])
        config.update(
            responseMimeType="text/x.enum", responseSchema={"type": "STRING", "enum": values}
        )
    else:
        declaration: dict[str, Any] = {"name": "f"}
        if style == "any":
            declaration["parametersJsonSchema"] = rng.choice(BAD_SCHEMAS)
        else:
            declaration["parameters"] = rng.choice(GEMINI_SCHEMAS)
        body["tools"] = [{"functionDeclarations": [declaration]}]
        body["toolConfig"] = {"functionCallingConfig": {"mode": "ANY"}}
    # countTokens builds and checks the grammar as a generation does; a few cases also sample
    # under it (a few tokens each: on two shared cores they are the slow part of the run).
    action = "countTokens"
    if rng.random() < 0.1:
        action = rng.choice(
            ["generateContent", "streamGenerateContent", "streamGenerateContent?alt=sse"]
        )
    return "POST", f"{MODEL_PATH}:{action}", {}, json.dumps(body).encode()


def case_types(rng: random.Random) -> Request:
    body = base_body(rng)
    junk = rng.choice([None, True, -1, 1.5, "x", [], {}, [None], {"a": []}, "\u0000", "\u00b9"])
    spots: list[list[Any]] = [
        ["contents"],
        ["contents", 0],
        ["contents", 0, "parts"],
        ["contents", 0, "parts", 0],
        ["contents", 0, "role"],
        ["generationConfig"],
        ["generationConfig", "maxOutputTokens"],
        ["generationConfig", "stopSequences"],
        ["generationConfig", "responseModalities"],
        ["safetySettings"],
        ["tools"],
        ["toolConfig"],
        ["cachedContent"],
    ]
    where = rng.choice(spots)
    node: Any = body
    for key in where[:-1]:
        node = node[key]
    node[where[-1]] = junk
    return *generate(rng.choice(["generateContent", "countTokens"])), {}, json.dumps(body).encode()


def case_garbage(rng: random.Random) -> Request:
    raw = rng.choice(
        [
            b"",
            b"{",
            b"null",
            b"[]",
            b'"x"',
            b"\xff\xfe\x00",
            b"\xef\xbb\xbf{}",
            b'{"contents": [}',
            b'{"contents": "' + b"\x80" * 10 + b'"}',
            bytes(rng.randrange(256) for _ in range(rng.randint(1, 64))),
            b'{"a":1}' * 100,
        ]
    )
    path = rng.choice(
        [f"{MODEL_PATH}:generateContent", f"{MODEL_PATH}:countTokens", "/v1beta/cachedContents"]
    )
    return "POST", path, {}, raw


def case_route(rng: random.Random) -> Request:
    method, path = rng.choice(ROUTES)
    headers = {"host": "evil.example"} if rng.random() < 0.5 else {}
    return method, path + ("&" if "?" in path else "?") + "key=k1", headers, b""


def case_media(rng: random.Random) -> Request:
    mime = rng.choice(
        ["image/png", "image/jpeg", "audio/wav", "audio/pcm;rate=\u00b9", "video/mp4", "x/y", ""]
    )
    data = rng.choice(
        [
            "@@@",
            base64.b64encode(os.urandom(rng.randint(0, 64))).decode(),
            base64.b64encode(b"\x89PNG\r\n\x1a\n" + os.urandom(32)).decode(),
            base64.b64encode(b"RIFF\x00\x00\x00\x00WAVEfmt ").decode(),
            "",
        ]
    )
    body = base_body(rng)
    body["contents"][0]["parts"].append({"inlineData": {"mimeType": mime, "data": data}})
    if rng.random() < 0.3:
        body["contents"][0]["parts"].append({"fileData": {"fileUri": "gs://bucket/x"}})
    return *generate(rng.choice(["generateContent", "countTokens"])), {}, json.dumps(body).encode()


def case_caches(rng: random.Random) -> Request:
    bodies = [
        {"model": "models/no-such-model", "contents": [{"parts": [{"text": "x"}]}]},
        {"model": f"models/{FAST_MODEL}", "contents": [], "ttl": "-5s"},
        {"model": f"models/{FAST_MODEL}", "ttl": "9" * 40 + "s"},
        {"model": f"models/{FAST_MODEL}", "expireTime": "99999-01-01T00:00:00Z"},
        {"model": f"models/{FAST_MODEL}", "expireTime": "0001-01-01T00:00:00+23:59"},
        {"model": f"models/{FAST_MODEL}", "ttl": "\u00b9s"},
        {"model": f"models/{FAST_MODEL}", "contents": [{"parts": [{"text": "hi"}]}], "bogus": 1},
        {"model": 5},
    ]
    if rng.random() < 0.3:
        return "PATCH", "/v1beta/cachedContents/abc?updateMask=ttl", {}, b'{"ttl": "1e400s"}'
    return "POST", "/v1beta/cachedContents", {}, json.dumps(rng.choice(bodies)).encode()


def case_tokens(rng: random.Random) -> Request:
    bodies = [
        {"uses": -1},
        {"uses": 2**40},
        {"expireTime": "not a time"},
        {"fieldMask": "generationConfig.\ufffd"},
        {"bidiGenerateContentSetup": {"model": "models/none"}},
        {"bidiGenerateContentSetup": {"model": f"models/{FAST_MODEL}", "x": 1}},
        {"newSessionExpireTime": "2000-01-01T00:00:00Z"},
    ]
    return "POST", "/v1alpha/auth_tokens", {}, json.dumps(rng.choice(bodies)).encode()


FAMILIES: list[Callable[[random.Random], Request]] = [
    case_deep,
    case_huge,
    case_surrogate,
    case_schema,
    case_types,
    case_garbage,
    case_route,
    case_media,
    case_caches,
    case_tokens,
]


def gemini_shaped(response: httpx.Response) -> bool:
    try:
        error = response.json()["error"]
    except (ValueError, KeyError, TypeError):
        return False
    return {"code", "message", "status"} <= set(error) and error["code"] == response.status_code


async def rest_phase(server: Server, tally: Counter[str], odd: list[str]) -> None:
    rng = random.Random(SEED)
    cases = [(family.__name__, family(rng)) for family in rng.choices(FAMILIES, k=REST_CASES)]
    deadline = time.monotonic() + BUDGET_S
    limits = asyncio.Semaphore(6)
    async with httpx.AsyncClient(base_url=server.base_url, timeout=60) as client:

        async def one(name: str, request: Request) -> None:
            method, path, headers, body = request
            async with limits:
                if time.monotonic() > deadline:
                    return
                response = await client.request(method, path, headers=headers, content=body)
            tally[f"REST {response.status_code}"] += 1
            if response.status_code >= 500 or "location" in response.headers:
                odd.append(
                    f"{name}: {method} {path[:80]} -> {response.status_code} {response.text[:200]}"
                )
            elif response.status_code >= 400 and not gemini_shaped(response):
                odd.append(
                    f"{name}: {method} {path[:80]}: not a Gemini error: {response.text[:200]}"
                )

        await within_budget([one(name, request) for name, request in cases], deadline, tally)


# --- Live cases -----------------------------------------------------------------------------------


def setup(**config: Any) -> str:
    return json.dumps({"setup": {"model": f"models/{FAST_MODEL}", **config}})


GOOD_SETUP = setup(generationConfig={"maxOutputTokens": 2})
BAD_SETUPS: list[str | bytes] = [
    "not json",
    b"\xff\xfe",
    json.dumps({"clientContent": {"turnComplete": True}}),
    setup(
        generationConfig={
            "responseMimeType": "application/json",
            "responseJsonSchema": {"enum": []},
        }
    ),
    setup(
        generationConfig={
            "responseMimeType": "application/json",
            "responseJsonSchema": {"anyOf": []},
        }
    ),
    setup(
        generationConfig={
            "responseMimeType": "text/x.enum",
            "responseSchema": {"type": "STRING", "enum": ['a"', "b\n"]},
        }
    ),
    setup(
        tools=[{"functionDeclarations": [{"name": "f", "parametersJsonSchema": {"enum": []}}]}],
        toolConfig={"functionCallingConfig": {"mode": "ANY"}},
    ),
    setup(
        generationConfig={
            "responseMimeType": "application/json",
            "responseJsonSchema": {"type": "string", "pattern": "["},
        }
    ),
    setup(generationConfig={"topK": 2**40}),
    setup(systemInstruction={"parts": [{"text": "x"}]}).replace('"x"', '"\\ud800"'),
    setup(contextWindowCompression={"triggerTokens": 10, "slidingWindow": {"targetTokens": 20}}),
    setup(sessionResumption={"handle": "nope"}),
    setup(cachedContent="cachedContents/none"),
    setup(realtimeInputConfig={"automaticActivityDetection": {"silenceDurationMs": 10**12}}),
    setup(proactivity={"proactiveAudio": True}),
    json.dumps({"setup": {"model": "models/nope"}}),
    json.dumps({"setup": {"model": ""}}),
    "[" * 5000 + "]" * 5000,
    setup(generationConfig={"maxOutputTokens": "1" * 5000}).replace(
        '"' + "1" * 5000 + '"', "1" * 5000
    ),
]
PCM = base64.b64encode(b"\0\0" * 160).decode()


def audio(mime: str, data: str = PCM) -> str:
    return json.dumps({"realtimeInput": {"audio": {"mimeType": mime, "data": data}}})


BAD_FRAMES: list[str | bytes] = [
    "{not json",
    b"\x00\xff binary",
    "[" * 5000 + "]" * 5000,
    '{"realtimeInput": {"text": "\\ud800"}}',
    '{"realtimeInput": {"text": "x"}, "n": ' + "1" * 40 + "}",
    audio("audio/pcm;rate=\u00b9\u2076\u2070\u2070\u2070"),
    audio("audio/pcm;rate=" + "1" * 5000),
    audio("audio/pcm;rate=0"),
    audio("audio/wav"),
    audio("audio/pcm", "@@not base64@@"),
    audio("audio/pcm", "AA=="),
    json.dumps({"realtimeInput": {"video": {"mimeType": "image/jpeg", "data": "/9j/AAAA"}}}),
    json.dumps({"realtimeInput": {"mediaChunks": [{"mimeType": "image/png", "data": "@@"}]}}),
    json.dumps({"realtimeInput": {}}),
    json.dumps({"realtimeInput": {"activityStart": {}}}),
    json.dumps({"clientContent": {"turnComplete": True}}),
    json.dumps({"clientContent": {"turns": [{"parts": []}]}}),
    json.dumps(
        {
            "clientContent": {
                "turns": [{"parts": [{"inlineData": {"mimeType": "image/png", "data": "x"}}]}],
                "turnComplete": True,
            }
        }
    ),
    json.dumps({"toolResponse": {"functionResponses": [{"id": "nope", "name": "f"}]}}),
    json.dumps({"toolResponse": {"functionResponses": []}}),
    GOOD_SETUP,
    json.dumps({"bogus": {}}),
    audio("audio/pcm;rate=16000"),  # a valid chunk: the session stays open
]


async def live_session(server: Server, frames: list[str | bytes], wait_s: float) -> str:
    """How the server ended the session: "close <code>", "open" (it did not), or "dropped"."""
    url = f"ws://127.0.0.1:{server.port}{WS_PATH}"
    try:
        async with websockets.connect(url, max_size=None, open_timeout=10) as ws:
            for frame in frames:
                await ws.send(frame)
            async with asyncio.timeout(wait_s):
                while True:
                    await ws.recv()
    except TimeoutError:
        return "open"
    except websockets.ConnectionClosed as closed:
        return f"close {closed.rcvd.code}" if closed.rcvd is not None else "dropped"
    return "open"


async def live_phase(server: Server, tally: Counter[str], frames_sent: list[int]) -> None:
    rng = random.Random(SEED + 1)
    deadline = time.monotonic() + BUDGET_S
    limits = asyncio.Semaphore(6)

    async def one(frames: list[str | bytes], wait_s: float) -> None:
        async with limits:
            if time.monotonic() > deadline:
                return
            tally[f"Live {await live_session(server, frames, wait_s)}"] += 1
            frames_sent.append(len(frames))

    sessions: list[tuple[list[str | bytes], float]] = []
    for _ in range(LIVE_SESSIONS):
        if rng.random() < 0.35:
            sessions.append(([rng.choice(BAD_SETUPS)], 5.0))
        else:
            sessions.append(([GOOD_SETUP, *rng.choices(BAD_FRAMES, k=rng.randint(1, 3))], 1.5))
    sessions.insert(0, ([], SETUP_TIMEOUT_S + 5))  # says nothing: closed for want of a setup
    sessions.insert(1, ([GOOD_SETUP, "x" * (9 << 20)], 5.0))  # past the frame limit: 1009
    await within_budget([one(frames, wait) for frames, wait in sessions], deadline, tally)


async def within_budget(work: list[Any], deadline: float, tally: Counter[str]) -> None:
    """Run `work` concurrently; what is still running at `deadline` (a few seconds' grace
    later) is cancelled, its connection closed under the server: counted as cut off."""
    tasks = [asyncio.ensure_future(w) for w in work]
    _, pending = await asyncio.wait(tasks, timeout=max(deadline + 3 - time.monotonic(), 0))
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    tally["cut off by the time budget"] += len(pending)
    for task in tasks:
        if not task.cancelled() and task.exception() is not None:
            raise task.exception()  # type: ignore[misc]


# --- sockets that misbehave below HTTP ----------------------------------------------------------


async def silent_sockets(server: Server, count: int) -> list[float]:
    """Seconds until the server closed each of `count` sockets that never sent a byte."""

    async def one() -> float:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        began = time.monotonic()
        async with asyncio.timeout(HEADER_TIMEOUT_S + 10):
            await reader.read()
        writer.close()
        return time.monotonic() - began

    return list(await asyncio.gather(*(one() for _ in range(count))))


async def never_reading_client(server: Server) -> int:
    """The close code a client gets that sets up a session, asks, and then reads nothing."""
    key = base64.b64encode(os.urandom(16)).decode()
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(
        (
            f"GET {WS_PATH} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    for text in (GOOD_SETUP, json.dumps({"realtimeInput": {"text": "Tell me a long story."}})):
        payload = text.encode()
        mask = os.urandom(4)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        writer.write(bytes([0x81, 0x80 | 126]) + struct.pack(">H", len(payload)) + mask + masked)
    await asyncio.sleep(SEND_TIMEOUT_S * 2.5)  # reading nothing: no pong goes back
    async with asyncio.timeout(15):
        received = await reader.read()
    writer.close()
    data = received.partition(b"\r\n\r\n")[2]
    while len(data) >= 2:
        opcode, length = data[0] & 0x0F, data[1] & 0x7F
        start = 2
        if length == 126:
            length, start = struct.unpack(">H", data[2:4])[0], 4
        elif length == 127:
            length, start = struct.unpack(">Q", data[2:10])[0], 10
        if opcode == 0x8:
            return int(struct.unpack(">H", data[start : start + 2])[0])
        data = data[start + length :]
    return 1006  # no close frame


async def test_the_server_survives_adversarial_input(
    target: Server, request: pytest.FixtureRequest
) -> None:
    tally: Counter[str] = Counter()
    odd: list[str] = []
    began = time.monotonic()
    special = asyncio.gather(silent_sockets(target, 20), never_reading_client(target))
    await rest_phase(target, tally, odd)
    frames_sent: list[int] = []
    await live_phase(target, tally, frames_sent)
    silent, never_read = await special
    async with httpx.AsyncClient(base_url=target.base_url) as client:
        health = (await client.get("/healthz")).status_code
    log = target.log()
    facts = {
        "seed": SEED,
        "seconds": round(time.monotonic() - began, 1),
        "REST requests": sum(n for k, n in tally.items() if k.startswith("REST ")),
        "Live sessions": sum(n for k, n in tally.items() if k.startswith("Live ")),
        "Live frames sent": sum(frames_sent),
        "5xx": sum(n for k, n in tally.items() if k.startswith("REST 5")),
        "1011": tally["Live close 1011"],
        "dropped without a close": tally["Live dropped"],
        "silent sockets closed after (s, max)": round(max(silent), 2),
        "never-reading client closed with": never_read,
        "tracebacks in the server log": log.count("Traceback"),
        "process alive": target.process.poll() is None,
    }
    publish(request.config, "loopback", tally, facts)
    assert target.process.poll() is None, log[-3000:]
    assert health == 200
    assert odd == []
    assert facts["5xx"] == 0 and facts["1011"] == 0 and facts["dropped without a close"] == 0
    assert "unhandled error" not in log and "Logging error" not in log
    assert log.count("Traceback") == 0, log[log.index("Traceback") - 500 :][:4000]
    assert max(silent) < HEADER_TIMEOUT_S + 5
    assert never_read == 1008
    assert tally["Live close 1009"] >= 1
