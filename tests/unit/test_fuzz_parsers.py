"""Fuzz: the edge's parsers and the schema-to-grammar path against adversarial input.

Every case must end in a parsed message or a FlashliveError (a Gemini 4xx / a 1007-1009 close),
never in another exception: that is what a 500, a 1011 or a dead process was made of. The cases
are hypothesis's, derandomized (the same ones every run); the tallies are printed at the end.
Explore further with FLASHLIVE_FUZZ_EXAMPLES=5000 and `--hypothesis-profile=explore` (random).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fuzz_report import publish
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flashlive.api.bodies import validated_body
from flashlive.api.errors import http_status
from flashlive.errors import FlashliveError
from flashlive.generation.constraints import (
    allowed_functions,
    calling_mode,
    response_schema,
    tool_specs,
)
from flashlive.generation.grammar import schema_grammar
from flashlive.generation.messages import messages_of
from flashlive.generation.pattern import pattern_expression
from flashlive.generation.schema import function_call_schema, to_json_schema
from flashlive.live.session import Conversation, LiveConfig, Window
from flashlive.perception.audio import parse_pcm_mime, pcm16_to_float
from flashlive.protocol.base import decode_base64
from flashlive.protocol.caches import CachedContent, CreateCachedContentRequest
from flashlive.protocol.content import Content, FunctionCallingMode, Part, Role, Schema
from flashlive.protocol.generate import (
    CountTokensRequest,
    GenerateContentRequest,
    GenerationConfig,
)
from flashlive.protocol.live import parse_client_message
from flashlive.protocol.tokens import CreateAuthTokenRequest

TALLY: Counter[str] = Counter()
EXAMPLES = int(os.environ.get("FLASHLIVE_FUZZ_EXAMPLES", "200"))  # per test
FUZZ = settings(max_examples=EXAMPLES, suppress_health_check=list(HealthCheck), deadline=None)


@pytest.fixture(scope="module", autouse=True)
def report(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    publish(request.config, "parsers", TALLY, {"other exceptions": 0})


def outcome(name: str, work: Callable[[], object]) -> None:
    """Run one case; a FlashliveError is a refusal, any other exception fails the test."""
    try:
        work()
    except FlashliveError as exc:
        assert 400 <= http_status(exc) < 500, exc.message
        TALLY[f"{name}: refused {http_status(exc)}"] += 1
    else:
        TALLY[f"{name}: accepted"] += 1


# --- JSON as an attacker writes it -----------------------------------------------------------

SURROGATES = st.sampled_from(["\ud800", "\udfff", "\udbff\udbff", "a\udc00b"])
texts = st.one_of(
    st.text(max_size=12),
    st.text(st.characters(codec=None, categories=None), max_size=8),  # surrogates included
    SURROGATES,
    st.sampled_from(["<start_of_turn>", "<|im_start|>", "[multimodal]", '"', "\\", "\n", ""]),
)
numbers = st.one_of(
    st.integers(),
    st.integers(min_value=2**31 - 2, max_value=2**31 + 2),
    st.sampled_from([2**63, -(2**63) - 1, 2**64, 10**30, -(10**30), 0, -1, 1]),
    st.floats(allow_nan=True, allow_infinity=True),
)
leaves = st.one_of(st.none(), st.booleans(), numbers, texts)
values = st.recursive(
    leaves,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(texts, inner, max_size=3),
    max_leaves=10,
)


def nested(depth: int, inner: str = "1", kind: str = "[") -> str:
    close = {"[": "]", "{": "}"}[kind]
    if kind == "{":
        return '{"a":' * depth + inner + close * depth
    return kind * depth + inner + close * depth


def dumped(value: Any) -> str:
    return json.dumps(value, ensure_ascii=True)  # lone surrogates become \ud800 escapes


ADVERSARIAL = st.one_of(
    SURROGATES,
    st.sampled_from([2**31, -(2**31) - 1, 2**63, 10**30, float("inf"), float("nan"), -1, 0]),
    st.sampled_from(["", "x" * 10_000, "<start_of_image>", '"\\\n', "\u00b9\u2076"]),
    st.builds(lambda d: json.loads(nested(d)), st.sampled_from([30, 60, 63, 64, 65])),
    values,
)


def paths(value: Any, here: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [here]
    if isinstance(value, dict):
        for key, item in value.items():
            found += paths(item, (*here, key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            found += paths(item, (*here, i))
    return found


def replaced(value: Any, path: tuple[Any, ...], new: Any) -> Any:
    if not path:
        return new
    head, *rest = path
    if isinstance(value, dict):
        return {**value, head: replaced(value[head], tuple(rest), new)}
    copy = list(value)
    copy[head] = replaced(copy[head], tuple(rest), new)
    return copy


@st.composite
def wire_text(draw: st.DrawFn, body: st.SearchStrategy[Any]) -> bytes:
    """JSON text built from `body` with one value somewhere made adversarial, then maybe the text
    itself made so where a parser is weakest."""
    value = draw(body)
    if draw(st.booleans()):
        where = draw(st.sampled_from(paths(value)))
        value = replaced(value, where, draw(ADVERSARIAL))
    text = dumped(value)
    mangle = draw(st.sampled_from(["none"] * 4 + ["deep", "huge", "constant", "cut", "bytes"]))
    if mangle == "deep":
        depth = draw(st.sampled_from([63, 64, 65, 200, 990, 5000]))
        inner = nested(depth, kind=draw(st.sampled_from(["[", "{"])))
        text = text.replace("null", inner, 1) if "null" in text else inner
    elif mangle == "huge":
        huge = draw(st.sampled_from(["1" * 30, "9" * 5000]))
        text = re.sub(r"(?<![\w.])\d+(?![\w.])", huge, text, count=1)
    elif mangle == "constant":
        text = text.replace("null", draw(st.sampled_from(["NaN", "Infinity", "1e999"])), 1)
    elif mangle == "cut":
        text = text[: draw(st.integers(0, max(len(text) - 1, 0)))]
    elif mangle == "bytes":
        return draw(st.binary(max_size=40))
    return text.encode()


words = st.text(st.sampled_from("abc xyz?.\n\u00e9"), min_size=1, max_size=12)
plain_parts = st.fixed_dictionaries({"text": words})
plain_contents = st.lists(
    st.fixed_dictionaries(
        {"parts": st.lists(plain_parts, min_size=1, max_size=2)},
        optional={"role": st.sampled_from(["user", "model"])},
    ),
    min_size=1,
    max_size=2,
)
parts = st.fixed_dictionaries(
    {},
    optional={
        "text": values,
        "inlineData": st.fixed_dictionaries({"mimeType": texts, "data": texts}),
        "functionCall": st.fixed_dictionaries({"name": texts}, optional={"args": values}),
        "functionResponse": st.fixed_dictionaries({"name": texts}, optional={"response": values}),
        "thought": values,
    },
)
contents = plain_contents | st.lists(
    st.fixed_dictionaries(
        {"parts": st.lists(parts, max_size=3)},
        optional={"role": st.sampled_from(["user", "model", "function", "system", 3])},
    ),
    max_size=3,
)
schemas = st.recursive(
    st.fixed_dictionaries(
        {},
        optional={
            "type": st.sampled_from(
                ["string", "integer", "number", "boolean", "object", "array", "null", "x", []]
            )
            | st.lists(st.sampled_from(["string", "null", "integer"]), max_size=3),
            "enum": st.lists(values, max_size=3),
            "pattern": st.sampled_from(["[", "^\\d+$", "(?=a)", "a{2,1}", "^a|b$", '"', ""])
            | st.text(max_size=8),
            "format": st.sampled_from(["date-time", "uuid", "email", 5]),
            "minLength": numbers,
            "maxItems": numbers,
            "minimum": numbers,
            "maximum": numbers,
            "required": st.lists(texts, max_size=2) | values,
            "additionalProperties": st.booleans() | st.just({}),
            "$ref": st.sampled_from(["#", "#/$defs/a", "#/nope", "http://x", 3]),
            "not": st.just({}),
            "nullable": st.booleans(),
        },
    ),
    lambda inner: st.fixed_dictionaries(
        {},
        optional={
            "properties": st.dictionaries(texts, inner, max_size=3),
            "items": inner,
            "anyOf": st.lists(inner, max_size=3),
            "$defs": st.dictionaries(st.just("a"), inner, max_size=1),
            "type": st.sampled_from(["object", "array"]),
        },
    ),
    max_leaves=8,
)
plain_schemas = st.recursive(
    st.sampled_from(
        [
            {"type": "string"},
            {"type": "integer", "minimum": 0},
            {"type": "boolean"},
            {"type": "string", "enum": ['a"b', "c\\d", "e\nf"]},
            {"type": "string", "pattern": "^[a-z]{2,5}\\d?$"},
            {"type": "string", "format": "date-time"},
        ]
    ),
    lambda inner: (
        st.builds(
            lambda props, required: {
                "type": "object",
                "properties": props,
                "required": [k for k in props if required],
            },
            st.dictionaries(words, inner, min_size=1, max_size=3),
            st.booleans(),
        )
        | st.builds(lambda item: {"type": "array", "items": item, "maxItems": 3}, inner)
    ),
    max_leaves=5,
)
generation_configs = st.fixed_dictionaries(
    {},
    optional={
        "temperature": numbers,
        "topK": numbers,
        "seed": numbers,
        "candidateCount": numbers,
        "maxOutputTokens": numbers,
        "logprobs": numbers,
        "stopSequences": st.lists(texts, max_size=6),
        "responseMimeType": st.sampled_from(["application/json", "text/x.enum", "text/plain", "x"]),
        "responseJsonSchema": schemas | plain_schemas,
        "responseSchema": schemas,
    },
)
plain_configs = st.fixed_dictionaries(
    {},
    optional={
        "temperature": st.floats(0, 2),
        "topK": st.integers(1, 100),
        "maxOutputTokens": st.integers(1, 8),
        "responseMimeType": st.just("application/json"),
        "responseJsonSchema": plain_schemas,
    },
)
tools = st.lists(
    st.fixed_dictionaries(
        {
            "functionDeclarations": st.lists(
                st.fixed_dictionaries(
                    {"name": st.sampled_from(["f", "g", "bad name", "\ud800"])},
                    optional={
                        "parametersJsonSchema": schemas | plain_schemas,
                        "parameters": schemas,
                    },
                ),
                max_size=2,
            )
        }
    ),
    max_size=2,
)
plain_requests = st.fixed_dictionaries(
    {"contents": plain_contents},
    optional={
        "generationConfig": plain_configs,
        "tools": tools,
        "toolConfig": st.just({"functionCallingConfig": {"mode": "ANY"}}),
    },
)
requests = plain_requests | st.fixed_dictionaries(
    {},
    optional={
        "contents": contents,
        "systemInstruction": st.fixed_dictionaries({"parts": st.lists(parts, max_size=2)}),
        "generationConfig": generation_configs,
        "tools": tools,
        "toolConfig": st.fixed_dictionaries(
            {
                "functionCallingConfig": st.fixed_dictionaries(
                    {"mode": st.sampled_from(["ANY", "AUTO", "NONE", "VALIDATED", "X"])},
                    optional={"allowedFunctionNames": st.lists(texts, max_size=2)},
                )
            }
        ),
        "cachedContent": texts,
    },
)


def prepared_without_an_engine(request: GenerateContentRequest) -> None:
    """What `GenerationService.prepare` decides before it needs a model: all of it refusals."""
    config = request.generation_config or GenerationConfig()
    schema, where = response_schema(config)
    messages_of(request)
    specs = tool_specs(request.tools)
    mode = calling_mode(request, specs)
    allowed = allowed_functions(request, specs)
    if mode is FunctionCallingMode.ANY:
        functions = {s.name: s.parameters for s in specs if s.name in allowed}
        schema, where = function_call_schema(functions), "functionDeclarations"
    if schema is not None:
        well_formed(schema_grammar(schema, where))


@FUZZ
@given(raw=wire_text(requests | values))
def test_generate_content_bodies_parse_or_are_400s(raw: bytes) -> None:
    outcome(
        "generateContent",
        lambda: prepared_without_an_engine(validated_body(raw, GenerateContentRequest)),
    )


@FUZZ
@given(
    raw=wire_text(
        st.fixed_dictionaries(
            {}, optional={"contents": contents, "generateContentRequest": requests}
        )
    )
)
def test_count_tokens_bodies_parse_or_are_400s(raw: bytes) -> None:
    outcome("countTokens", lambda: validated_body(raw, CountTokensRequest))


@FUZZ
@given(
    raw=wire_text(
        st.fixed_dictionaries(
            {},
            optional={
                "model": texts,
                "contents": contents,
                "ttl": texts | numbers,
                "expireTime": texts,
                "displayName": texts,
            },
        )
    ),
    create=st.booleans(),
)
def test_cached_content_bodies_parse_or_are_400s(raw: bytes, create: bool) -> None:
    kind = CreateCachedContentRequest if create else CachedContent
    outcome("cachedContents", lambda: validated_body(raw, kind))


@FUZZ
@given(
    raw=wire_text(
        st.fixed_dictionaries(
            {},
            optional={
                "uses": numbers,
                "expireTime": texts,
                "newSessionExpireTime": texts,
                "fieldMask": texts,
                "bidiGenerateContentSetup": st.fixed_dictionaries({"model": texts}),
            },
        )
    )
)
def test_auth_token_bodies_parse_or_are_400s(raw: bytes) -> None:
    outcome("authTokens", lambda: validated_body(raw, CreateAuthTokenRequest))


# --- Live frames --------------------------------------------------------------------------------

blobs = st.fixed_dictionaries(
    {
        "mimeType": st.sampled_from(
            ["audio/pcm;rate=16000", "audio/pcm;rate=\u00b9\u2076\u2070\u2070\u2070", "image/jpeg"]
        )
        | texts,
        "data": st.sampled_from(["AAAA", "AA==", "@@", ""]) | texts,
    }
)
setups = st.fixed_dictionaries(
    {"model": st.sampled_from(["models/m", "models/m", "m", "", "models/"]) | texts},
    optional={
        "generationConfig": generation_configs,
        "tools": tools,
        "systemInstruction": st.fixed_dictionaries({"parts": st.lists(parts, max_size=2)}),
        "realtimeInputConfig": st.fixed_dictionaries(
            {},
            optional={
                "automaticActivityDetection": st.fixed_dictionaries(
                    {}, optional={"disabled": values, "silenceDurationMs": numbers}
                )
            },
        ),
        "contextWindowCompression": st.fixed_dictionaries(
            {},
            optional={
                "triggerTokens": numbers,
                "slidingWindow": st.fixed_dictionaries({}, optional={"targetTokens": numbers}),
            },
        ),
        "proactivity": values,
    },
)
messages = st.one_of(
    st.fixed_dictionaries({"setup": setups}),
    st.fixed_dictionaries({"clientContent": st.fixed_dictionaries({"turns": plain_contents})}),
    st.fixed_dictionaries({"realtimeInput": st.fixed_dictionaries({"text": words})}),
    st.fixed_dictionaries(
        {
            "clientContent": st.fixed_dictionaries(
                {}, optional={"turns": contents, "turnComplete": values}
            )
        }
    ),
    st.fixed_dictionaries(
        {
            "realtimeInput": st.fixed_dictionaries(
                {},
                optional={
                    "audio": blobs,
                    "video": blobs,
                    "text": texts,
                    "mediaChunks": st.lists(blobs, max_size=2),
                    "activityStart": values,
                    "audioStreamEnd": values,
                },
            )
        }
    ),
    st.fixed_dictionaries(
        {"toolResponse": st.fixed_dictionaries({"functionResponses": st.lists(parts, max_size=2)})}
    ),
    values,
)


def live_frame(raw: bytes) -> None:
    """What a session does with a frame before any model: parse it, then its pure checks."""
    message = parse_client_message(raw)
    if message.setup is not None:
        config = LiveConfig.from_setup(message.setup)
        Window.from_setup(message.setup.context_window_compression, context_size=4096, reserve=512)
        said = Content(role=Role.USER, parts=[Part(text="x")])
        prepared_without_an_engine(config.base.model_copy(update={"contents": [said]}))
    elif message.client_content is not None:
        Conversation().add_client_turns(message.client_content.turns or [])
    elif message.realtime_input is not None:
        given = message.realtime_input
        for blob in [given.audio, given.video, *(given.media_chunks or [])]:
            if blob is not None and blob.mime_type.lower().startswith("audio/"):
                parse_pcm_mime(blob.mime_type)
                with contextlib.suppress(ValueError):  # bad base64: the driver closes 1007
                    pcm16_to_float(decode_base64(blob.data))
    elif message.tool_response is not None:
        Conversation().answer_calls(message.tool_response.function_responses)


@FUZZ
@given(raw=wire_text(messages) | st.binary(max_size=30) | st.text(max_size=30).map(str.encode))
def test_live_frames_parse_or_are_refused(raw: bytes) -> None:
    outcome("live frame", lambda: live_frame(raw))


@FUZZ
@given(
    mime=st.text(max_size=30)
    | st.builds(lambda r: f"audio/pcm;rate={r}", st.integers(0, 10**7) | st.text(max_size=8))
    | st.sampled_from(["audio/pcm", "AUDIO/L16; rate=24000", "audio/pcm;rate=16000;channels=1"])
)
def test_audio_mime_types_give_a_rate_or_are_refused(mime: str) -> None:
    outcome("audio mime", lambda: parse_pcm_mime(mime))


# --- schemas → grammars --------------------------------------------------------------------------

RULE_NAMES = re.compile(r"[a-z][a-z0-9-]*")


def well_formed(grammar: str) -> None:
    """Every line is one rule; every rule a body names is defined."""
    rules = dict(line.split(" ::= ", 1) for line in grammar.splitlines())
    assert "root" in rules
    for body in rules.values():
        bare = re.sub(r'"(?:[^"\\]|\\.)*"', "", body)
        bare = re.sub(r"\[(?:[^\]\\]|\\.)*\]", "", bare)
        bare = re.sub(r"\{\d+(,\d*)?\}", "", bare)
        assert set(RULE_NAMES.findall(bare)) <= set(rules), body


def grammar_of(schema: Any) -> None:
    well_formed(schema_grammar(schema, "schema"))


@FUZZ
@given(schema=schemas | values)
def test_json_schemas_become_a_grammar_or_a_400(schema: Any) -> None:
    outcome("responseJsonSchema", lambda: grammar_of(schema))


@FUZZ
@given(schema=schemas)
def test_gemini_schemas_become_a_grammar_or_a_400(schema: dict[str, Any]) -> None:
    def work() -> None:
        try:
            parsed = Schema.model_validate(schema)
        except ValueError:
            return  # a 400 at validation (tested above with the whole request)
        grammar_of(to_json_schema(parsed))

    outcome("responseSchema", work)


@FUZZ
@given(pattern=st.text(st.sampled_from('ab^$|()[]{}*+?.\\-,0123dwsDWS:=!<>P"\n'), max_size=16))
def test_patterns_become_gbnf_or_a_400(pattern: str) -> None:
    outcome("pattern", lambda: pattern_expression(pattern, "pattern"))
