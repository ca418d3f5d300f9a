"""The generation service over the fake engine: prepare's refusals, the REST path through the
output path (stops, calls, enum answers, cancellation), and the prefix-state policy."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from scripted import MODEL, FakeEngine, Script, models_over, service_over

from flashlive.cache.kv import PrefixStore
from flashlive.cache.prefix import IMPLICIT_MIN_TOKENS, PrefixAsk, StoredPrefixes, implicit_key
from flashlive.engine import Engine, Priority, common_prefix
from flashlive.errors import InvalidArgument
from flashlive.generation.prompt import TOOL_CALL_OPEN
from flashlive.generation.service import GenerationService
from flashlive.protocol.generate import FinishReason, GenerateContentRequest

WEATHER = {
    "name": "get_weather",
    "parameters": {
        "type": "OBJECT",
        "properties": {"city": {"type": "STRING"}},
        "required": ["city"],
    },
}


def request(text: str = "Capital of France?", **body: Any) -> GenerateContentRequest:
    return GenerateContentRequest.model_validate(
        {"contents": [{"role": "user", "parts": [{"text": text}]}], **body}
    )


def test_the_fake_engine_is_an_engine() -> None:
    engine: Engine = FakeEngine()  # mypy checks this line against the protocol
    assert engine.info.name == MODEL and engine.count_tokens("abc") == 3


async def test_prepare_renders_tokenizes_and_takes_the_models_defaults(tmp_path: Path) -> None:
    service = service_over(tmp_path, FakeEngine())
    prepared = await service.prepare(MODEL, request())
    assert prepared.prompt_text.endswith("User: Capital of France?\nAssistant:")
    assert prepared.tokens == [ord(c) for c in prepared.prompt_text]
    assert prepared.params.max_tokens == 64 and prepared.params.grammar is None
    assert "\nUser:" in prepared.stops


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"generationConfig": {"maxOutputTokens": 65}}, "maxOutputTokens is 65"),
        ({"generationConfig": {"temperature": 1.5}}, "temperature is 1.5; .* at most 1"),
        ({"model": "models/qwen2.5-coder-1.5b-instruct"}, "not models/gemma-3-270m of its URL"),
        (
            {
                "tools": [{"functionDeclarations": [WEATHER]}],
                "toolConfig": {"functionCallingConfig": {"mode": "ANY"}},
                "generationConfig": {"responseMimeType": "application/json"},
            },
            "cannot be combined",
        ),
    ],
    ids=["max-output-tokens", "temperature", "model-mismatch", "call-and-json"],
)
async def test_prepare_refuses(tmp_path: Path, body: dict[str, Any], message: str) -> None:
    engine = FakeEngine()
    service = GenerationService(
        models_over(tmp_path, engine, max_temperature=1.0), output_token_limit=64
    )
    with pytest.raises(InvalidArgument, match=message):
        await service.prepare(MODEL, request(**body))
    assert engine.asked == []


async def test_prepare_refuses_a_prompt_longer_than_the_context(tmp_path: Path) -> None:
    service = service_over(tmp_path, FakeEngine(context_size=300))
    with pytest.raises(InvalidArgument, match="takes at most 299 input tokens"):
        await service.prepare(MODEL, request("x" * 300))


async def test_a_stop_sequence_cuts_the_answer_and_ends_the_turn(tmp_path: Path) -> None:
    engine = FakeEngine([[" Paris", " is.", " END", " of it"]])
    body: dict[str, Any] = {"generationConfig": {"stopSequences": [" END"]}}
    response = await service_over(tmp_path, engine).generate(MODEL, request(**body))
    candidate = response.candidates[0]
    assert candidate.content.parts[0].text == "Paris is."
    assert candidate.finish_reason is FinishReason.STOP
    assert response.usage_metadata is not None
    assert response.usage_metadata.candidates_token_count == 3  # the pieces read before the stop
    assert engine.cancelled == 1  # the stream was closed before the engine was done


async def test_an_answer_cut_by_max_tokens_says_so(tmp_path: Path) -> None:
    engine = FakeEngine([["a"] * 10])
    body: dict[str, Any] = {"generationConfig": {"maxOutputTokens": 4}}
    response = await service_over(tmp_path, engine).generate(MODEL, request(**body))
    assert response.candidates[0].content.parts[0].text == "aaaa"
    assert response.candidates[0].finish_reason is FinishReason.MAX_TOKENS


async def test_a_forced_call_is_captured_whole(tmp_path: Path) -> None:
    engine = FakeEngine([['{"name": "get_weather",', ' "arguments": {"city": "Paris"}}']])
    body: dict[str, Any] = {
        "tools": [{"functionDeclarations": [WEATHER]}],
        "toolConfig": {"functionCallingConfig": {"mode": "ANY"}},
    }
    chunks = [c async for c in service_over(tmp_path, engine).stream(MODEL, request(**body))]
    assert len(chunks) == 1  # nothing streamed before the call was whole
    call = chunks[0].candidates[0].content.parts[0].function_call
    assert call is not None and call.name == "get_weather" and call.args == {"city": "Paris"}
    assert engine.asked[0].prompt.endswith(TOOL_CALL_OPEN + "\n")
    assert engine.asked[0].params.grammar is not None


async def test_a_malformed_forced_call_is_reported(tmp_path: Path) -> None:
    engine = FakeEngine([['{"name": "get_weather", "argu']])
    body: dict[str, Any] = {
        "tools": [{"functionDeclarations": [WEATHER]}],
        "toolConfig": {"functionCallingConfig": {"mode": "ANY"}},
    }
    response = await service_over(tmp_path, engine).generate(MODEL, request(**body))
    assert response.candidates[0].finish_reason is FinishReason.MALFORMED_FUNCTION_CALL


async def test_an_enum_answer_comes_without_its_quotes(tmp_path: Path) -> None:
    engine = FakeEngine([['"bl', 'ue"']])
    body: dict[str, Any] = {
        "generationConfig": {
            "responseMimeType": "text/x.enum",
            "responseSchema": {"type": "STRING", "enum": ["red", "blue"]},
        }
    }
    response = await service_over(tmp_path, engine).generate(MODEL, request(**body))
    assert response.candidates[0].content.parts[0].text == "blue"
    assert engine.asked[0].params.grammar is not None
    prepared = await service_over(tmp_path, FakeEngine()).prepare(MODEL, request(**body))
    assert prepared.stops == ()  # a JSON answer is not cut at the transcript's turn markers


async def test_closing_a_stream_early_cancels_the_generation(tmp_path: Path) -> None:
    engine = FakeEngine([["one ", "two ", "three ", "four"]])
    stream = service_over(tmp_path, engine).stream(MODEL, request("x" * IMPLICIT_MIN_TOKENS))
    first = await anext(stream)
    assert first.candidates[0].content.parts[0].text == "one"
    await stream.aclose()
    for _ in range(10):  # the inner generation is closed by the loop's finalizer, soon after
        if engine.cancelled:
            break
        await asyncio.sleep(0)
    assert engine.cancelled == 1
    assert len(engine.asked) == 1 and engine.prefilled == [len(engine.asked[0].prompt)]


async def test_a_failing_engine_fails_the_request(tmp_path: Path) -> None:
    engine = FakeEngine([Script(["Hel"], RuntimeError("decode failed"))])
    with pytest.raises(RuntimeError, match="decode failed"):
        await service_over(tmp_path, engine).generate(MODEL, request())


async def test_a_conversation_restores_its_own_state_on_its_next_turn(tmp_path: Path) -> None:
    engine = FakeEngine([["Paris."], ["Lyon."], ["x"]])
    service = service_over(tmp_path, engine)
    first = request()
    async for _ in service.stream(MODEL, first, state_key="live:1"):
        pass
    assert engine.restored == []
    engine.evict()  # another request ran in between
    follow = first.model_copy(
        update={
            "contents": [
                *first.contents,
                *request("And Spain?").contents,
            ]
        }
    )
    final = [c async for c in service.stream(MODEL, follow, state_key="live:1")][-1]
    assert len(engine.restored) == 1  # the saved state, not the whole prompt again
    assert final.usage_metadata is not None
    first_tokens, next_tokens = ([ord(c) for c in a.prompt] for a in engine.asked[:2])
    shared = common_prefix(first_tokens, next_tokens)
    assert final.usage_metadata.cached_content_token_count == shared
    assert engine.prefilled[-1] == len(engine.asked[1].prompt) - shared
    service.forget_state("live:1")
    engine.evict()
    async for _ in service.stream(MODEL, follow, state_key="live:1"):
        pass
    assert len(engine.restored) == 1  # forgotten: nothing to restore


async def test_a_resident_conversation_is_reused_without_a_copy(tmp_path: Path) -> None:
    engine = FakeEngine([["Paris."], ["Lyon."]])
    service = service_over(tmp_path, engine)
    first = request()
    async for _ in service.stream(MODEL, first, state_key="live:2"):
        pass
    follow = first.model_copy(update={"contents": [*first.contents, *request("Spain?").contents]})
    final = [c async for c in service.stream(MODEL, follow, state_key="live:2")][-1]
    assert engine.restored == []  # nothing was loaded: the sequence was still held
    assert engine.priorities == [Priority.LIVE, Priority.LIVE]
    first_tokens, next_tokens = ([ord(c) for c in a.prompt] for a in engine.asked)
    shared = common_prefix(first_tokens, next_tokens)
    assert final.usage_metadata is not None
    assert final.usage_metadata.cached_content_token_count == shared
    assert engine.prefilled[-1] == len(next_tokens) - shared


async def test_a_long_prompt_leaves_an_implicit_state_and_a_short_one_none() -> None:
    store = PrefixStore(spill_dir=None)
    policy = StoredPrefixes(store)
    engine = FakeEngine()
    short = PrefixAsk(MODEL, [1] * 10)
    await engine.warm(short.tokens)
    await policy.leave(engine, short)
    assert store.get(implicit_key(short.tokens)) is None
    long = PrefixAsk(MODEL, [1] * IMPLICIT_MIN_TOKENS)
    await engine.warm(long.tokens)
    await policy.leave(engine, long)
    assert store.get(implicit_key(long.tokens)) is None  # resident in the engine: no copy
    longer = PrefixAsk(MODEL, [1] * (IMPLICIT_MIN_TOKENS + 5))
    assert await policy.restore(engine, longer) == (None, IMPLICIT_MIN_TOKENS)
    engine.evict()  # only now is the state copied out, into the store
    assert store.get(implicit_key(long.tokens)) is not None
    found = await policy.restore(engine, longer)
    assert found is not None and found[0] is not None and found[1] == IMPLICIT_MIN_TOKENS


async def test_a_state_left_by_another_request_is_not_kept() -> None:
    store = PrefixStore(spill_dir=None)
    policy = StoredPrefixes(store)
    engine = FakeEngine()
    await engine.warm([2] * 20)  # what the engine holds is someone else's
    await policy.leave(engine, PrefixAsk(MODEL, [1] * 20, state_key="mine"))
    engine.evict()
    assert store.get("mine") is None


async def test_a_cached_context_state_is_computed_once_and_reused() -> None:
    store = PrefixStore(spill_dir=None)
    policy = StoredPrefixes(store)
    engine = FakeEngine()
    ask = PrefixAsk(MODEL, list(range(50)), cached_key="m:cachedContents/a", cached_len=40)
    first = await policy.restore(engine, ask)
    assert first is not None and first[1] == 40 and engine.prefilled == [40]
    again = await policy.restore(engine, ask)
    assert again is not None and again[0] is first[0] and engine.prefilled == [40]


async def test_a_service_tier_is_the_engines_priority_class(tmp_path: Path) -> None:
    engine = FakeEngine([["a"], ["b"], ["c"], ["d"]])
    service = service_over(tmp_path, engine)
    for tier in ("FLEX", "priority", "STANDARD"):
        await service.generate(MODEL, request(serviceTier=tier))
    await service.generate(MODEL, request())
    expected = [Priority.FLEX, Priority.PRIORITY, Priority.STANDARD, Priority.STANDARD]
    assert engine.priorities == expected
