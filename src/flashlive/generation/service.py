"""generateContent, streamGenerateContent and countTokens on top of an engine.

The request is turned into messages, rendered with the model's formatter, tokenized
once, and streamed; the same rendering serves countTokens, so promptTokenCount and
countTokens always agree. The steps live beside this facade: `media` (images, audio, video →
observations), `cached` (cachedContent), `messages` (prompt assembly), `constraints` (tools,
schemas, grammars), `decode` and `runner` (the output path), `usage` (what is billed) and
`cache.prefix` (which saved engine state a prompt starts from).
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable

from flashlive.cache.kv import PrefixStore
from flashlive.cache.prefix import PrefixPolicy, StoredPrefixes
from flashlive.engine import Priority
from flashlive.errors import FlashliveError, InvalidArgument
from flashlive.generation.cached import (
    CachedPrefix,
    CacheResolver,
    cached_length,
    resolve_cached,
    with_cache,
)
from flashlive.generation.constraints import constraints_of, grammars_of
from flashlive.generation.media import MediaReader, Perceived
from flashlive.generation.messages import Formatters, messages_of, render, with_system
from flashlive.generation.prepared import (
    Outcome,
    Prepared,
    check_lengths,
    sampling_params,
)
from flashlive.generation.prompt import TOOL_CALL_OPEN
from flashlive.generation.runner import run
from flashlive.logs import current_request
from flashlive.models import LoadedModel, ModelManager
from flashlive.perception.audio import FloatArray
from flashlive.perception.vision import Vision
from flashlive.protocol.content import Content, Part, Role
from flashlive.protocol.generate import (
    Candidate,
    CountTokensRequest,
    CountTokensResponse,
    GenerateContentRequest,
    GenerateContentResponse,
    GenerationConfig,
    ServiceTier,
    UsageMetadata,
)
from flashlive.usage import MediaTokens, usage_metadata

_TIERS = {
    ServiceTier.PRIORITY: Priority.PRIORITY,
    ServiceTier.STANDARD: Priority.STANDARD,
    ServiceTier.FLEX: Priority.FLEX,
}

__all__ = [
    "CacheResolver",
    "CachedPrefix",
    "GenerationService",
    "MediaTokens",
    "Outcome",
    "Prepared",
    "config_of",
]


def config_of(request: GenerateContentRequest) -> GenerationConfig:
    return request.generation_config or GenerationConfig()


class GenerationService:
    def __init__(
        self,
        models: ModelManager,
        *,
        output_token_limit: int,
        prefixes: PrefixStore | None = None,
        vision: Vision | None = None,
        transcribe: Callable[[FloatArray], Awaitable[str]] | None = None,
        media_tokens: MediaTokens | None = None,
        video_fps: float = 1.0,
        prefix_policy: PrefixPolicy | None = None,
    ) -> None:
        self._models = models
        self.media_tokens = media_tokens or MediaTokens()
        self._media = MediaReader(vision, transcribe, self.media_tokens, video_fps)
        self._prefixes = prefix_policy or StoredPrefixes(prefixes or PrefixStore(spill_dir=None))
        self._formatters = Formatters()
        self.output_token_limit = output_token_limit

    @property
    def video_fps(self) -> float:
        return self._media.video_fps

    async def count_tokens(self, model: str, request: CountTokensRequest) -> CountTokensResponse:
        if request.generate_content_request is not None:
            if request.contents:
                raise InvalidArgument("give either contents or generateContentRequest, not both")
            full = request.generate_content_request
        else:
            full = GenerateContentRequest(contents=request.contents or [])
        prepared = await self.prepare(model, full)
        details = prepared.prompt_details(self.media_tokens)
        return CountTokensResponse(
            total_tokens=sum(d.token_count for d in details), prompt_tokens_details=details
        )

    async def count_cached(self, model: str, cached: CachedPrefix) -> int:
        """The tokens of a context to cache, rendered exactly as a generation using it will be.

        A cache may hold any of contents, a system instruction and tools: a prompt of its own
        needs contents, a cached prefix does not.
        """
        prefix = GenerateContentRequest(
            contents=cached.contents,
            system_instruction=cached.system_instruction,
            tools=cached.tools,
            tool_config=cached.tool_config,
        )
        prepared = await self.prepare(model, prefix, prefix_only=True)
        return sum(d.token_count for d in prepared.prompt_details(self.media_tokens))

    async def prepare(
        self,
        model: str,
        request: GenerateContentRequest,
        resolve_cache: CacheResolver | None = None,
        *,
        prefix_only: bool = False,
    ) -> Prepared:
        """Everything a generation of `request` needs. With `prefix_only`, `request` is a
        context to cache rather than a prompt, and may hold no contents."""
        loaded = await self._models.get(model)
        cached: CachedPrefix | None = None
        if request.cached_content:
            cached = await resolve_cached(loaded, request, resolve_cache)
            request = with_cache(request, cached)
        perceived = await self._media.perceive(request, config_of(request).media_resolution)
        request = perceived.request
        if request.model and self._models.spec(request.model).id != loaded.spec.id:
            raise InvalidArgument(
                f"the request names {request.model}, not models/{loaded.spec.id} of its URL"
            )
        prepared = await self._assemble(loaded, request, perceived, prefix_only=prefix_only)
        if cached is not None:
            formatter, guard = self._formatters.of(loaded)
            prepared.prefix_key = f"{loaded.spec.id}:{cached.name}"
            tools = list(prepared.offered)
            prepared.prefix_len = await cached_length(
                loaded, formatter, guard, cached, tools, prepared.tokens
            )
        prepared.priority = _TIERS.get(
            request.service_tier or ServiceTier.STANDARD, Priority.STANDARD
        )
        return prepared

    async def _assemble(
        self,
        loaded: LoadedModel,
        request: GenerateContentRequest,
        perceived: Perceived,
        *,
        prefix_only: bool,
    ) -> Prepared:
        """The prompt's tokens and the rules of its answer (the request's media already read)."""
        config = config_of(request)
        messages = messages_of(request, allow_empty=prefix_only)
        rules = constraints_of(request, config)
        if rules.instruction is not None:
            messages = with_system(messages, rules.instruction)
        formatter, guard = self._formatters.of(loaded)
        rendered = await render(formatter, guard, messages, rules.offered)
        grammars = await grammars_of(rules, loaded.engine)
        text = rendered.text + (TOOL_CALL_OPEN + "\n" if rules.forced_call else "")
        # A 20 MB prompt takes a while to tokenize: keep that off the event loop.
        tokens = await asyncio.to_thread(loaded.engine.tokenize, text)
        max_tokens = config.max_output_tokens or self.output_token_limit
        context = loaded.engine.info.context_size
        check_lengths(loaded.spec, len(tokens), context, max_tokens, self.output_token_limit)
        constrained = grammars.answer is not None
        params = sampling_params(
            loaded.spec,
            config,
            max_tokens=max_tokens,
            grammar=grammars.answer,
            constrained=constrained,
        )
        media = perceived.media
        media.observed_tokens = sum(loaded.engine.count_tokens(o) for o in perceived.observations)
        return Prepared(
            model=loaded,
            tokens=tokens,
            params=params,
            stops=tuple(config.stop_sequences or ()) + (() if constrained else rendered.stop),
            forced_call=rules.forced_call,
            enum_answer=rules.enum_answer,
            capture_calls=rules.capture_calls,
            prompt_text=text,
            call_grammar=grammars.call,
            functions=rules.functions,
            offered=tuple(rules.offered),
            media=media,
        )

    async def warm_cache(self, model: str, cached: CachedPrefix) -> int:
        """Compute and keep the state of a cached context now, so its first use is fast too.

        Returns the number of cached tokens (as a request ending in a question will see them).
        """

        async def resolve(name: str) -> CachedPrefix:
            return cached

        probe = GenerateContentRequest(
            contents=[Content(role=Role.USER, parts=[Part(text="?")])],
            cached_content=cached.name,
        )
        prepared = await self.prepare(model, probe, resolve)
        await self._prefixes.restore(prepared.model.engine, prepared.prefix_ask, own_warming=True)
        return prepared.prefix_len

    def start_warming(self, model: str, cached: CachedPrefix) -> None:
        """Compute a new cache's state in the background; a request using it meanwhile waits
        for that work instead of repeating it."""

        async def work() -> None:
            await self.warm_cache(model, cached)

        self._prefixes.warm_soon(f"{model}:{cached.name}", work)

    def forget_cache(self, model: str, name: str) -> None:
        self._prefixes.forget(f"{model}:{name}")

    def forget_state(self, key: str) -> None:
        """A conversation that ended: its saved state is no longer worth its memory."""
        self._prefixes.forget(key)

    async def stream(
        self,
        model: str,
        request: GenerateContentRequest,
        resolve_cache: CacheResolver | None = None,
        state_key: str | None = None,
    ) -> AsyncGenerator[GenerateContentResponse, None]:
        """Generate, chunk by chunk. With `state_key`, the engine state after this turn is
        kept under that key for the conversation's next turn (a Live session's)."""
        prepared = await self.prepare(model, request, resolve_cache)
        prepared.state_key = state_key
        if state_key is not None:
            prepared.priority = Priority.LIVE  # a conversation's turn: somebody is listening
        response_id = _response_id()
        outcome = Outcome()
        async for delta in self._run(prepared, outcome):
            yield _chunk(prepared, response_id, [Part(text=delta)])
        parts = [Part(function_call=c) for c in outcome.calls]
        final = _chunk(prepared, response_id, parts or [Part(text="")])
        final.candidates[0].finish_reason = outcome.finish
        final.usage_metadata = self._usage(prepared, outcome)
        yield final

    async def warm(
        self,
        model: str,
        request: GenerateContentRequest,
        resolve_cache: CacheResolver | None = None,
        state_key: str | None = None,
    ) -> bool:
        """Prefill what `request` renders to while the engine is idle: a later request that
        shares its prefix (the same conversation, the user's final words) starts sooner."""
        try:
            prepared = await self.prepare(model, request, resolve_cache)
        except FlashliveError:
            return False  # the real request will report it
        prepared.state_key = state_key
        engine = prepared.model.engine
        found = await self._prefixes.restore(engine, prepared.prefix_ask)
        if found is not None and found[1] > engine.resident(prepared.tokens):
            return False  # restoring that state is the real request's job, and cheap
        done = await engine.warm(prepared.tokens)
        if done and state_key is not None:
            await self._prefixes.leave(engine, prepared.prefix_ask)  # kept if others come first
        return done

    async def generate(
        self,
        model: str,
        request: GenerateContentRequest,
        on_first_token: Callable[[], None] | None = None,
        resolve_cache: CacheResolver | None = None,
    ) -> GenerateContentResponse:
        prepared = await self.prepare(model, request, resolve_cache)
        outcome = Outcome()
        async for _ in self._run(prepared, outcome):
            if on_first_token is not None:
                on_first_token()
                on_first_token = None
        text = outcome.text
        parts = ([Part(text=text)] if text else []) + [Part(function_call=c) for c in outcome.calls]
        response = _chunk(prepared, _response_id(), parts or [Part(text="")])
        response.candidates[0].finish_reason = outcome.finish
        response.usage_metadata = self._usage(prepared, outcome)
        return response

    def _run(self, prepared: Prepared, outcome: Outcome) -> AsyncIterator[str]:
        return run(prepared, outcome, self._prefixes)

    def _usage(self, prepared: Prepared, outcome: Outcome) -> UsageMetadata:
        details = prepared.prompt_details(self.media_tokens)
        return usage_metadata(details, generated=outcome.generated, cached=outcome.cached)


def _chunk(prepared: Prepared, response_id: str, parts: list[Part]) -> GenerateContentResponse:
    return GenerateContentResponse(
        candidates=[Candidate(content=Content(role=Role.MODEL, parts=parts), index=0)],
        model_version=prepared.model.spec.id,
        response_id=response_id,
    )


def _response_id() -> str:
    """A REST answer's responseId is its request's id, the one its log lines carry."""
    return current_request() or secrets.token_urlsafe(12)
