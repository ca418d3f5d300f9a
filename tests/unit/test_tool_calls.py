"""Function calls under AUTO and VALIDATED, over a scripted engine.

Once an answer has begun a call, the call is decoded again under the grammar of a declared
function's call, so it cannot come out malformed; free text is never constrained. The engine
here plays back what a model would write (tests/scripted.py); the real model is exercised in
tests/integration/test_rest_sdk.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from scripted import MODEL, FakeEngine, service_over

from flashlive.generation.prompt import TOOL_CALL_OPEN
from flashlive.protocol.generate import GenerateContentRequest, GenerationConfig

CALL = '{"name": "get_weather", "arguments": {"city": "Paris"}}'


def request(mode: str | None = None, max_tokens: int | None = None) -> GenerateContentRequest:
    body: dict[str, Any] = {
        "contents": [{"role": "user", "parts": [{"text": "Weather in Paris? Use the tool."}]}],
        "tools": [
            {
                "functionDeclarations": [
                    {
                        "name": "get_weather",
                        "parameters": {
                            "type": "OBJECT",
                            "properties": {"city": {"type": "STRING"}},
                            "required": ["city"],
                        },
                    }
                ]
            }
        ],
    }
    if mode is not None:
        body["toolConfig"] = {"functionCallingConfig": {"mode": mode}}
    if max_tokens is not None:
        body["generationConfig"] = {"maxOutputTokens": max_tokens}
    return GenerateContentRequest.model_validate(body)


async def answer(tmp_path: Path, mode: str | None, *scripts: list[str]) -> tuple[Any, FakeEngine]:
    engine = FakeEngine(list(scripts))
    response = await service_over(tmp_path, engine).generate(MODEL, request(mode))
    return response, engine


@pytest.mark.parametrize("mode", [None, "AUTO", "VALIDATED"])
@pytest.mark.parametrize(
    "opening",
    [
        ["{{", '"name": "get_weather", "arguments": {"city": "Paris"}}}'],  # Qwen's doubled braces
        ["<tools>", "\n{"],  # the tool list's tag, echoed where the call's belongs
        [" <tool_call>", "\n{{"],
    ],
    ids=["doubled-braces", "tools-tag", "call-marker"],
)
async def test_a_call_begun_any_way_is_decoded_under_the_call_grammar(
    tmp_path: Path, mode: str | None, opening: list[str]
) -> None:
    response, engine = await answer(tmp_path, mode, opening, [CALL, "\n</tool_call>"])
    parts = response.candidates[0].content.parts
    assert [p.function_call.name for p in parts if p.function_call] == ["get_weather"]
    assert parts[0].function_call.args == {"city": "Paris"}
    assert not any(p.text for p in parts)
    first, call = engine.asked
    assert first.params.grammar is None  # free text is never constrained
    assert call.prompt == first.prompt + TOOL_CALL_OPEN + "\n"
    assert "get_weather" in (call.params.grammar or "")  # the call of a declared function
    # The first pass stops at the opening's first piece; the call's two pieces follow.
    assert response.usage_metadata.candidates_token_count == 1 + 2


async def test_text_then_a_call_keeps_both(tmp_path: Path) -> None:
    response, engine = await answer(
        tmp_path, None, ["Let me check.", " <tool_call>", "{"], [CALL, "</tool_call>"]
    )
    parts = response.candidates[0].content.parts
    assert parts[0].text == "Let me check."
    assert parts[1].function_call.name == "get_weather"
    assert engine.asked[1].prompt.endswith("Let me check." + TOOL_CALL_OPEN + "\n")


async def test_free_text_is_one_unconstrained_pass(tmp_path: Path) -> None:
    response, engine = await answer(tmp_path, None, ["It is", " sunny, {mostly}."])
    assert response.candidates[0].content.parts[0].text == "It is sunny, {mostly}."
    assert len(engine.asked) == 1 and engine.asked[0].params.grammar is None


async def test_a_call_cut_short_by_max_tokens_says_so(tmp_path: Path) -> None:
    engine = FakeEngine([["{{"], ['{"name": ', '"get_weather", "argu']])
    response = await service_over(tmp_path, engine).generate(MODEL, request(max_tokens=2))
    assert response.candidates[0].finish_reason == "MAX_TOKENS"
    assert not any(p.function_call for p in response.candidates[0].content.parts)
    assert engine.asked[1].params.max_tokens == 1  # what the first pass left of the budget


async def test_a_json_answer_beside_tools_is_no_call(tmp_path: Path) -> None:
    engine = FakeEngine([['{"city": ', '"Paris"}']])
    asked = request().model_copy(
        update={"generation_config": GenerationConfig(response_mime_type="application/json")}
    )
    response = await service_over(tmp_path, engine).generate(MODEL, asked)
    assert response.candidates[0].content.parts[0].text == '{"city": "Paris"}'
    assert len(engine.asked) == 1  # no second pass: a brace opens the JSON answer asked for
