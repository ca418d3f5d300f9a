"""The edge's JSON: depth, numbers and Unicode bounded before any model sees a message."""

from __future__ import annotations

import json

import pytest

from flashlive.api.errors import http_status
from flashlive.errors import InvalidArgument
from flashlive.protocol.generate import GenerateContentRequest, GenerationConfig
from flashlive.protocol.live import parse_client_message
from flashlive.protocol.wire_json import MAX_DEPTH, parse_wire_json


def refusal(raw: str | bytes) -> str:
    with pytest.raises(InvalidArgument) as info:
        parse_wire_json(raw)
    assert http_status(info.value) == 400
    assert info.value.message.startswith("Invalid JSON payload received.")
    return info.value.message


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


def test_ordinary_json_passes_unchanged() -> None:
    body = {"contents": [{"parts": [{"text": "héllo \u2603 \U0001f600"}]}], "n": -(2**63), "x": 1.5}
    assert parse_wire_json(json.dumps(body)) == body
    assert parse_wire_json(nested(MAX_DEPTH)) is not None


@pytest.mark.parametrize("depth", [MAX_DEPTH + 1, 990, 10_000, 100_000])
def test_deep_nesting_is_refused_at_any_depth(depth: int) -> None:
    assert f"deeper than {MAX_DEPTH} levels" in refusal(nested(depth))


def test_deep_nesting_inside_function_call_args_names_the_place() -> None:
    args = "{}"
    for _ in range(200):
        args = '{"a": ' + args + "}"
    call = '{"functionCall": {"name": "f", "args": ' + args + "}}"
    message = refusal('{"contents": [{"role": "model", "parts": [' + call + "]}]}")
    assert "contents[0].parts[0].functionCall.args.a.a" in message


@pytest.mark.parametrize(
    "literal", ["111111111111111111111111111111", "-9223372036854775809", "1" * 5000]
)
def test_integers_past_64_bits_are_refused_by_place(literal: str) -> None:
    message = refusal('{"generationConfig": {"candidateCount": ' + literal + "}}")
    assert "generationConfig.candidateCount" in message and "out of range" in message


@pytest.mark.parametrize("literal", ["1e400", "-1e999", "NaN", "Infinity", "-Infinity"])
def test_non_finite_numbers_are_refused(literal: str) -> None:
    raw = '{"generationConfig": {"temperature": ' + literal + "}}"
    assert "generationConfig.temperature" in refusal(raw)


@pytest.mark.parametrize(
    ("raw", "where"),
    [
        ('{"contents": [{"parts": [{"text": "\\ud800"}]}]}', "contents[0].parts[0].text"),
        ('{"contents": [{"parts": [{"text": "a\\udfffb"}]}]}', "contents[0].parts[0].text"),
        ('{"systemInstruction": {"parts": [{"text": "\\udc00"}]}}', "systemInstruction"),
        ('{"x": {"\\ud83d": 1}}', "x.\\ud83d"),
        ('{"tools": [{"functionDeclarations": [{"description": "\\ud800"}]}]}', "tools[0]"),
    ],
)
def test_lone_surrogates_anywhere_are_refused(raw: str, where: str) -> None:
    message = refusal(raw)
    assert "surrogate" in message and where in message


def test_a_surrogate_pair_is_one_character_not_a_lone_surrogate() -> None:
    assert parse_wire_json('{"t": "\\ud83d\\ude00"}') == {"t": "\U0001f600"}


@pytest.mark.parametrize("raw", [b"\xff\xfe{", "{", '{"a": }', "[1,]", ""])
def test_malformed_json_is_invalid_argument(raw: str | bytes) -> None:
    refusal(raw)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("topK", 2**31),
        ("seed", 2**31),
        ("seed", -(2**31) - 1),
        ("candidateCount", 2**40),
        ("maxOutputTokens", 2**31),
        ("logprobs", 2**33),
    ],
)
def test_int32_fields_refuse_what_an_int32_cannot_hold(field: str, value: int) -> None:
    with pytest.raises(ValueError, match=r"2147483647|-2147483648"):
        GenerationConfig.model_validate({field: value})


def test_int32_bounds_themselves_are_accepted() -> None:
    config = GenerationConfig.model_validate({"seed": -(2**31), "topK": 2**31 - 1})
    assert (config.seed, config.top_k) == (-(2**31), 2**31 - 1)
    GenerateContentRequest.model_validate({"generationConfig": {"maxOutputTokens": 2**31 - 1}})


@pytest.mark.parametrize(
    "raw",
    [
        '{"realtimeInput": {"text": "\\ud800"}}',
        nested(5000),
        '{"clientContent": {"turns": [{"parts": [{"text": "x"}]}], "turnComplete": 1e999}}',
        '["setup"]',
        "null",
        '{"realtimeInput": {"text": "a"}, "setup": {"model": "m"}}',
    ],
)
def test_bad_live_frames_are_invalid_argument(raw: str) -> None:
    with pytest.raises(InvalidArgument):
        parse_client_message(raw)


def test_a_live_frame_in_bytes_parses_like_text() -> None:
    message = parse_client_message(b'{"realtimeInput": {"text": "hi"}}')
    assert message.realtime_input is not None and message.realtime_input.text == "hi"
