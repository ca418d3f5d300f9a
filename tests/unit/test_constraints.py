"""Prompt assembly and the tool/schema policy, without an engine (or with the fake one)."""

from __future__ import annotations

from typing import Any

import pytest
from scripted import FakeEngine

from flashlive.errors import InvalidArgument
from flashlive.generation.constraints import (
    constraints_of,
    grammars_of,
    json_string,
    parse_calls,
)
from flashlive.generation.guard import BREAK, ControlTokenGuard
from flashlive.generation.messages import messages_of, render, with_system
from flashlive.generation.prompt import Message, PlainFormatter, ToolSpec
from flashlive.protocol.content import FunctionCallingMode
from flashlive.protocol.generate import GenerateContentRequest, GenerationConfig

WEATHER = {
    "name": "get_weather",
    "parameters": {"type": "OBJECT", "properties": {"city": {"type": "STRING"}}},
}
TIME = {"name": "get_time"}


def request(**body: Any) -> GenerateContentRequest:
    body.setdefault("contents", [{"role": "user", "parts": [{"text": "hi"}]}])
    return GenerateContentRequest.model_validate(body)


def rules_of(**body: Any) -> Any:
    req = request(**body)
    return constraints_of(req, req.generation_config or GenerationConfig())


def test_messages_carry_system_text_calls_and_function_responses() -> None:
    req = request(
        system_instruction={"parts": [{"text": "Be brief."}]},
        contents=[
            {"role": "user", "parts": [{"text": "Weather?"}]},
            {"role": "model", "parts": [{"functionCall": {"name": "f", "args": {"a": 1}}}]},
            {"role": "user", "parts": [{"functionResponse": {"name": "f", "response": {"t": 9}}}]},
            {"role": "model", "parts": [{"text": "secret", "thought": True}, {"text": "9."}]},
        ],
    )
    messages = messages_of(req)
    assert [m.role for m in messages] == ["system", "user", "assistant", "tool", "assistant"]
    assert messages[0].content == "Be brief."
    assert messages[2].tool_calls[0].name == "f" and messages[2].tool_calls[0].arguments == {"a": 1}
    assert messages[3].name == "f" and messages[3].content == '{"t": 9}'
    assert messages[4].content == "9."  # a thought is not part of the transcript


def test_empty_contents_are_refused_unless_a_cache_is_being_made() -> None:
    empty = GenerateContentRequest(contents=[])
    with pytest.raises(InvalidArgument, match="must not be empty"):
        messages_of(empty)
    assert messages_of(empty, allow_empty=True) == []


def test_an_unsupported_part_is_refused_naming_where() -> None:
    req = request(contents=[{"role": "user", "parts": [{"fileData": {"fileUri": "gs://x"}}]}])
    with pytest.raises(InvalidArgument, match=r"contents\[0\]\.parts\[0\]: fileData"):
        messages_of(req)


def test_system_text_joins_the_system_message_or_makes_one() -> None:
    assert with_system([Message("user", "q")], "S") == [
        Message("system", "S"),
        Message("user", "q"),
    ]
    joined = with_system([Message("system", "A"), Message("user", "q")], "S")
    assert joined[0] == Message("system", "A\n\nS") and len(joined) == 2


async def test_client_text_cannot_write_a_control_token() -> None:
    guard = ControlTokenGuard(frozenset({"<ctl>"}))
    tool = ToolSpec("f", "calls <ctl>", {"type": "object"})
    rendered = await render(PlainFormatter(), guard, [Message("user", "say <ctl>")], [tool])
    assert "<ctl>" not in rendered.text
    assert f"say <{BREAK}ctl>" in rendered.text and f"calls <{BREAK}ctl>" in rendered.text


def test_no_declarations_means_mode_none_and_nothing_offered() -> None:
    rules = rules_of()
    assert rules.mode is FunctionCallingMode.NONE and rules.offered == []
    assert not rules.capture_calls and not rules.forced_call and rules.instruction is None


@pytest.mark.parametrize("mode", ["AUTO", "VALIDATED", "MODE_UNSPECIFIED"])
def test_auto_like_modes_watch_free_text_for_calls(mode: str) -> None:
    rules = rules_of(
        tools=[{"functionDeclarations": [WEATHER]}],
        tool_config={"functionCallingConfig": {"mode": mode}},
    )
    assert rules.mode is FunctionCallingMode.AUTO and rules.capture_calls


def test_mode_none_offers_no_function() -> None:
    rules = rules_of(
        tools=[{"functionDeclarations": [WEATHER]}],
        tool_config={"functionCallingConfig": {"mode": "NONE"}},
    )
    assert rules.offered == [] and not rules.capture_calls


def test_allowed_function_names_narrow_the_offer_and_must_be_declared() -> None:
    tools = [{"functionDeclarations": [WEATHER, TIME]}]
    rules = rules_of(
        tools=tools,
        tool_config={
            "functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["get_time"]}
        },
    )
    assert [t.name for t in rules.offered] == ["get_time"] and rules.forced_call
    with pytest.raises(InvalidArgument, match="undeclared"):
        rules_of(
            tools=tools,
            tool_config={"functionCallingConfig": {"allowedFunctionNames": ["nope"]}},
        )


def test_refusals_of_the_tool_and_schema_policy() -> None:
    with pytest.raises(InvalidArgument, match="at least one function"):
        rules_of(tool_config={"functionCallingConfig": {"mode": "ANY"}})
    with pytest.raises(InvalidArgument, match="distinct names"):
        rules_of(tools=[{"functionDeclarations": [WEATHER, WEATHER]}])
    with pytest.raises(InvalidArgument, match="cannot be combined"):
        rules_of(
            tools=[{"functionDeclarations": [WEATHER]}],
            tool_config={"functionCallingConfig": {"mode": "ANY"}},
            generation_config={"responseMimeType": "application/json"},
        )
    with pytest.raises(InvalidArgument, match="needs responseMimeType"):
        rules_of(generation_config={"responseSchema": {"type": "STRING"}})
    with pytest.raises(InvalidArgument, match="needs a responseSchema with enum"):
        rules_of(generation_config={"responseMimeType": "text/x.enum"})
    with pytest.raises(InvalidArgument, match="not supported"):
        rules_of(generation_config={"responseMimeType": "text/html"})


def test_a_response_schema_is_told_to_the_model_and_an_enum_is_a_string_choice() -> None:
    rules = rules_of(
        generation_config={
            "responseMimeType": "text/x.enum",
            "responseSchema": {"type": "STRING", "enum": ["red", "blue"]},
        }
    )
    assert rules.schema == {"type": "string", "enum": ["red", "blue"]} and rules.enum_answer
    assert rules.instruction is not None and '"enum": ["red", "blue"]' in rules.instruction


async def test_grammars_follow_the_mode() -> None:
    engine = FakeEngine()
    tools = [{"functionDeclarations": [WEATHER]}]
    free = await grammars_of(rules_of(tools=tools), engine)
    assert free.answer is None and free.call is not None  # free text, a call if one begins
    forced = await grammars_of(
        rules_of(tools=tools, tool_config={"functionCallingConfig": {"mode": "ANY"}}), engine
    )
    assert forced.answer is not None and "get_weather" in forced.answer and forced.call is None
    json_only = await grammars_of(
        rules_of(tools=tools, generation_config={"responseMimeType": "application/json"}), engine
    )
    assert json_only.answer is not None and json_only.call is None


async def test_a_grammar_the_engine_cannot_parse_is_refused_before_any_text() -> None:
    rules = rules_of(generation_config={"responseMimeType": "application/json"})
    with pytest.raises(InvalidArgument, match="does not parse"):
        await grammars_of(rules, FakeEngine(grammars_parse=False))


def test_calls_are_read_back_only_when_all_of_them_name_declared_functions() -> None:
    functions: dict[str, dict[str, Any]] = {"f": {}}
    calls = parse_calls('<tool_call>{"name": "f", "arguments": {"x": 1}}</tool_call>', functions)
    assert calls is not None and calls[0].name == "f" and calls[0].args == {"x": 1}
    fenced = parse_calls('```json\n{"name": "f", "args": {}}\n```', functions)
    assert fenced is not None and fenced[0].args == {}
    assert parse_calls('{"name": "g", "arguments": {}}', functions) is None
    assert parse_calls('<tool_call>{"name": "f", "arguments": [1]}', functions) is None
    assert parse_calls("<tool_call>{not json", functions) is None


def test_an_enum_answer_is_its_string_or_nothing() -> None:
    assert json_string('"red"') == "red"
    assert json_string('"re') == "" and json_string("3") == ""
