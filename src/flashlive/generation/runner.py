"""One generation on the engine: from the saved state that helps most, through the output path,
to the text, calls and finish reason of its outcome."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import replace

from flashlive.cache.prefix import PrefixPolicy
from flashlive.engine import FinishCause
from flashlive.generation.constraints import json_string, parse_calls
from flashlive.generation.decode import OutputPath
from flashlive.generation.prepared import Outcome, Prepared
from flashlive.generation.prompt import TOOL_CALL_OPEN
from flashlive.protocol.generate import FinishReason


def output_path(prepared: Prepared) -> OutputPath:
    return OutputPath(
        prepared.stops,
        forced_call=prepared.forced_call,
        enum_answer=prepared.enum_answer,
        capture_calls=prepared.capture_calls,
        call_grammar=prepared.call_grammar,
    )


async def run(prepared: Prepared, outcome: Outcome, prefixes: PrefixPolicy) -> AsyncIterator[str]:
    """Yield visible text as it is generated; fill `outcome` when the stream ends."""
    engine = prepared.model.engine
    out = output_path(prepared)
    cause = FinishCause.LENGTH
    # A seeded request is computed from nothing, apart from the batch (engine/llamacpp.py), so
    # no held or saved state is reused for it, nor billed as cached.
    seeded = prepared.params.seed is not None
    found = None if seeded else await prefixes.restore(engine, prepared.prefix_ask)
    prefix = None
    if found is not None:
        prefix, outcome.cached = found
    stream = engine.stream(
        prepared.tokens,
        prepared.params,
        prefix=prefix,
        priority=prepared.priority,
        keep=prefixes.keeper(prepared.prefix_ask),
    )
    try:
        async for piece in stream:
            if piece.token_id is not None:
                outcome.generated += 1
            visible = out.feed(piece.text, last=piece.finish is not None)
            cause = out.cause(piece.finish, cause)
            if visible:
                outcome.text += visible
                yield visible
            if out.done:
                break
    finally:
        await stream.aclose()
    async for text in _finish(prepared, outcome, out, cause, prefixes):
        yield text


async def _finish(
    prepared: Prepared,
    outcome: Outcome,
    out: OutputPath,
    cause: FinishCause,
    prefixes: PrefixPolicy,
) -> AsyncIterator[str]:
    """What the held-back or captured text turns out to be: a call, an enum answer, or text."""
    raw = out.raw
    if out.call_begun:
        raw, cause = await decode_call(prepared, outcome)
    if cause is not FinishCause.CANCELLED:
        await prefixes.leave(prepared.model.engine, prepared.prefix_ask)
    outcome.finish = FinishReason.MAX_TOKENS if cause is FinishCause.LENGTH else FinishReason.STOP
    if prepared.enum_answer:
        if answer := json_string(raw or ""):
            outcome.text += answer
            yield answer
        return
    if not raw:
        return
    parsed = parse_calls(raw, prepared.functions)
    if parsed is not None:
        outcome.calls = parsed
    elif raw.lstrip().startswith(TOOL_CALL_OPEN):
        if outcome.finish is FinishReason.STOP:
            outcome.finish = FinishReason.MALFORMED_FUNCTION_CALL
    elif text := out.trim.feed(raw):  # an answer that merely looked like JSON: it is text
        outcome.text += text
        yield text


async def decode_call(prepared: Prepared, outcome: Outcome) -> tuple[str, FinishCause]:
    """The call a free answer (modes AUTO, VALIDATED) has begun to write, decoded again under
    the grammar of a declared function's call, after the text already given.

    Free text costs no grammar (over a whole vocabulary it costs 20 ms a token on the
    default model); a call, once begun, always comes out well-formed: a model that opens it
    the wrong way (Qwen copies the doubled braces of its template) is held to valid JSON.
    """
    engine = prepared.model.engine
    text = prepared.prompt_text + outcome.text + TOOL_CALL_OPEN + "\n"
    tokens = await asyncio.to_thread(engine.tokenize, text)
    budget = prepared.params.max_tokens - outcome.generated
    if budget < 1 or len(tokens) >= engine.info.context_size:
        return "", FinishCause.LENGTH
    params = replace(prepared.params, max_tokens=budget, grammar=prepared.call_grammar)
    raw, cause = TOOL_CALL_OPEN, FinishCause.LENGTH
    stream = engine.stream(tokens, params, priority=prepared.priority)
    try:
        async for piece in stream:
            outcome.generated += piece.token_id is not None
            raw += piece.text
            cause = piece.finish or cause
    finally:
        await stream.aclose()
    return raw, cause
