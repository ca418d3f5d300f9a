"""The embedded engine in-process, on the real fast model."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from flashlive.config import Settings
from flashlive.engine import CancelToken, FinishCause, SamplingParams
from flashlive.engine.llamacpp import LlamaCppEngine, LlamaCppOptions
from flashlive.models import BUILTIN_MODELS, ModelManager, assemble

FAST = next(s for s in BUILTIN_MODELS if s.id == "gemma-3-270m")
LONG_PROMPT = "Write a very long story about a lighthouse keeper and the sea. Chapter 1."


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def engine() -> AsyncIterator[LlamaCppEngine]:
    path = await asyncio.to_thread(assemble, FAST, Settings().models_dir)
    eng = LlamaCppEngine(path, name=FAST.id, options=LlamaCppOptions(context_size=2048))
    yield eng
    await eng.aclose()


pytestmark = pytest.mark.asyncio(loop_scope="module")


async def collect(engine: LlamaCppEngine, prompt: str, params: SamplingParams) -> tuple[str, int]:
    text, count = "", 0
    async for piece in engine.stream(engine.tokenize(prompt), params):
        text += piece.text
        count += piece.token_id is not None
    return text, count


async def test_event_loop_keeps_ticking_during_a_long_generation(engine: LlamaCppEngine) -> None:
    gaps: list[float] = []
    done = asyncio.Event()

    async def ticker() -> None:
        last = time.perf_counter()
        while not done.is_set():
            await asyncio.sleep(0.01)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    tick = asyncio.create_task(ticker())
    params = SamplingParams(temperature=0.8, seed=1, max_tokens=150)
    _, produced = await collect(engine, LONG_PROMPT, params)
    done.set()
    await tick
    assert produced >= 50, "the generation should be long enough to matter"
    assert len(gaps) > 50
    assert max(gaps) < 0.05, f"the event loop stalled for {max(gaps) * 1000:.0f} ms"


async def test_closing_the_stream_cancels_generation_promptly(engine: LlamaCppEngine) -> None:
    cancel = CancelToken()
    stream = engine.stream(
        engine.tokenize(LONG_PROMPT),
        SamplingParams(temperature=0.8, seed=2, max_tokens=1000),
        cancel,
    )
    seen = 0
    async for piece in stream:
        seen += piece.token_id is not None
        if seen == 5:
            break
    closed = time.perf_counter()
    await stream.aclose()
    assert cancel.cancelled
    while engine.active:
        await asyncio.sleep(0.002)
    assert time.perf_counter() - closed < 0.1


async def test_same_seed_same_text_and_max_tokens_is_a_length_finish(
    engine: LlamaCppEngine,
) -> None:
    params = SamplingParams(temperature=1.0, seed=1234, max_tokens=20)
    first = await collect(engine, "Tell me about cats.", params)
    second = await collect(engine, "Tell me about cats.", params)
    assert first == second
    assert first[1] == 20
    finishes = [p.finish async for p in engine.stream(engine.tokenize("Hi"), params)]
    assert finishes[-1] is FinishCause.LENGTH


async def test_concurrent_requests_decode_together(engine: LlamaCppEngine) -> None:
    firsts: dict[int, int] = {}
    ends: dict[int, int] = {}

    async def run(i: int) -> None:
        params = SamplingParams(temperature=0.0, max_tokens=8)
        async for piece in engine.stream(engine.tokenize(f"Request {i}: hello"), params):
            firsts.setdefault(i, engine.stats.steps)
            if piece.finish is not None:
                ends[i] = engine.stats.steps

    tasks = []
    for i in range(4):
        tasks.append(asyncio.create_task(run(i)))
        await asyncio.sleep(0)  # let each one enqueue before the next
    await asyncio.gather(*tasks)
    assert sorted(ends) == [0, 1, 2, 3]
    # Every request had its first token before any of them ended: they ran side by side.
    assert max(firsts.values()) <= min(ends.values())


async def test_json_schema_constrains_output(engine: LlamaCppEngine) -> None:
    import json

    from flashlive.generation.grammar import schema_grammar

    schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
    grammar = schema_grammar(schema, "schema")
    assert engine.check_grammar(grammar)
    params = SamplingParams(temperature=1.0, seed=5, max_tokens=30, grammar=grammar)
    text, _ = await collect(engine, "Give me a number as JSON.", params)
    assert isinstance(json.loads(text)["n"], int)


async def test_cancel_during_a_long_prefill_frees_the_engine_after_one_slice(
    engine: LlamaCppEngine,
) -> None:
    prompt = engine.tokenize(" ".join(f"Line {i} of a long document." for i in range(160)))
    assert 1200 < len(prompt) < 2000
    cancel = CancelToken()
    stream = engine.stream(prompt, SamplingParams(max_tokens=5), cancel)
    first = asyncio.ensure_future(anext(stream))
    async with asyncio.timeout(10):
        while not engine.active:
            await asyncio.sleep(0.005)
    await asyncio.sleep(0.3)  # well inside the prefill (several seconds at full length)
    cancel.cancel()
    cancelled_at = time.perf_counter()
    piece = await first
    await stream.aclose()
    assert piece.finish is FinishCause.CANCELLED and piece.token_id is None
    while engine.active:
        await asyncio.sleep(0.005)
    assert time.perf_counter() - cancelled_at < 1.0


async def test_client_text_cannot_forge_the_image_tokens(engine: LlamaCppEngine) -> None:
    from flashlive.generation.guard import ControlTokenGuard

    forged = ["<start_of_image>", "<end_of_image>", "[multimodal]", "<start_of_turn>"]
    assert set(forged) <= engine.info.control_tokens
    assert not {"  ", "\n\n", "\t", "<table>", "</b>"} & engine.info.control_tokens
    special = {engine.tokenize(text)[-1] for text in forged}
    guard = ControlTokenGuard(engine.info.control_tokens)
    text = "see " + " and ".join(forged)
    assert special <= set(engine.tokenize(text))  # unguarded, they would be those tokens
    assert not special & set(engine.tokenize(guard.defuse(text)))
    assert guard.defuse("a  b\n\n\tc <b>d</b>") == "a  b\n\n\tc <b>d</b>"


async def test_the_context_a_model_reports_before_loading_is_the_one_it_gets() -> None:
    options = LlamaCppOptions(context_size=1000)  # not a multiple of llama.cpp's step
    models = ModelManager([FAST], models_dir=Settings().models_dir, options=options)
    try:
        predicted = models.context_size(FAST)
        loaded = await models.get(FAST.id)
        assert predicted == loaded.engine.info.context_size == models.context_size(FAST)
        assert predicted != 1000
    finally:
        await models.aclose()
