"""generateContent, streamGenerateContent and countTokens on top of an engine.

The request is turned into messages, rendered with the model's formatter, tokenized
once, and streamed; the same rendering serves countTokens, so promptTokenCount and
countTokens always agree.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import json
import logging
import math
import re
import secrets
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import Any

from PIL import Image

from flashlive.cache.kv import PrefixStore
from flashlive.engine import FinishCause, PrefixState, SamplingParams, common_prefix
from flashlive.errors import FlashliveError, InvalidArgument
from flashlive.generation.grammar import schema_grammar
from flashlive.generation.guard import ControlTokenGuard
from flashlive.generation.prompt import (
    TOOL_CALL_CLOSE,
    TOOL_CALL_OPEN,
    Formatter,
    Message,
    PlainFormatter,
    RenderedPrompt,
    TemplateFormatter,
    ToolCall,
    ToolSpec,
)
from flashlive.generation.resolution import Resolution, resolution_of
from flashlive.generation.schema import function_call_schema, to_json_schema
from flashlive.generation.text import MarkerSplit, StopMatcher, WhitespaceTrim
from flashlive.models import LoadedModel, ModelManager
from flashlive.perception.audio import INPUT_RATE, FloatArray, decode_audio
from flashlive.perception.mime import mime_base
from flashlive.perception.video import decode_video
from flashlive.perception.vision import SceneWatch, Vision, fit
from flashlive.protocol.base import blob_bytes
from flashlive.protocol.content import (
    Content,
    ContentLayer,
    FunctionCall,
    FunctionCallingMode,
    MediaResolution,
    Part,
    Role,
    Tool,
    ToolConfig,
    VideoMetadata,
)
from flashlive.protocol.generate import (
    Candidate,
    CountTokensRequest,
    CountTokensResponse,
    FinishReason,
    GenerateContentRequest,
    GenerateContentResponse,
    GenerationConfig,
    Modality,
    ModalityTokenCount,
    UsageMetadata,
)

log = logging.getLogger(__name__)

JSON_MIME = "application/json"
ENUM_MIME = "text/x.enum"
TEXT_MIME = "text/plain"
# An answer (modes AUTO, VALIDATED) that opens with one of these is watched as a possible call;
# one that opens with CALL_STARTS has begun a call: small models open it as bare JSON, or echo
# the tag of the tool list their template shows them (`<tools>`) where the call's belongs.
CALL_STARTS = ("{", "<tool")
CALL_OPENERS = (*CALL_STARTS, "```")
_FENCE = re.compile(r"^```(?:json)?\s*(.*?)\s*```$", re.S)
_TOOL_BLOCK = re.compile(
    re.escape(TOOL_CALL_OPEN) + r"\s*(.*?)\s*(?:" + re.escape(TOOL_CALL_CLOSE) + r"|$)", re.S
)


# A prompt at least this long leaves its state behind for later requests that begin the same way.
IMPLICIT_MIN_TOKENS = 1024
INLINE_RENDER_CHARS = 64 * 1024  # longer prompts are defused and rendered off the event loop
MAX_AUDIO_PART_S = 600.0  # longer audio parts are refused: transcription takes ~1/10 real time
MAX_VIDEO_PART_S = 300.0  # ... and longer videos: each changed frame takes ~0.25 s to look at
CACHE_WITH_OVERRIDES = (
    "CachedContent can not be used with GenerateContent request setting system_instruction, "
    "tools or tool_config. Proposed fix: move those values to CachedContent."
)


@dataclass(frozen=True)
class CachedPrefix:
    """What a cachedContents resource puts in front of a request."""

    name: str  # cachedContents/{id}
    model: str
    contents: list[Content]
    system_instruction: Content | None = None
    tools: list[Tool] | None = None
    tool_config: ToolConfig | None = None


# Looks a cachedContent name up for the caller (whose key it must belong to); raises NotFound.
CacheResolver = Callable[[str], Awaitable[CachedPrefix]]


@dataclass
class Prepared:
    """Everything a generation needs, decided before the engine is touched."""

    model: LoadedModel
    tokens: list[int]
    params: SamplingParams
    stops: tuple[str, ...]
    forced_call: bool = False  # the output is one JSON function call (mode ANY)
    enum_answer: bool = False  # the output is one JSON string, answered without its quotes
    capture_calls: bool = False  # watch the text for tool calls (modes AUTO, VALIDATED)
    prompt_text: str = ""  # what `tokens` are the tokens of
    call_grammar: str | None = None  # for a call a free answer begins (modes AUTO, VALIDATED)
    functions: dict[str, dict[str, Any]] = field(default_factory=dict)
    prefix_key: str | None = None  # the cachedContent whose state this prompt begins with
    prefix_len: int = 0
    state_key: str | None = None  # a conversation that keeps its own state between turns
    image_tokens: int = 0  # what the prompt's images count as, each seen as an observation
    video_tokens: int = 0  # ... its videos' frames, watched as observations over time
    audio_seconds: float = 0.0  # audio in the prompt, heard as a transcript
    observed_tokens: int = 0  # the tokens of those texts, billed as media instead

    def prompt_details(self, rates: MediaTokens) -> list[ModalityTokenCount]:
        """Prompt tokens by modality, as usage reports (and bills) them."""
        audio = math.ceil(self.audio_seconds * rates.audio_per_s)
        counts = (
            (Modality.TEXT, len(self.tokens) - self.observed_tokens),
            (Modality.IMAGE, self.image_tokens),
            (Modality.VIDEO, self.video_tokens),
            (Modality.AUDIO, audio),
        )
        return [
            ModalityTokenCount(modality=modality, token_count=count)
            for modality, count in counts
            if count or modality is Modality.TEXT
        ]


@dataclass
class Perceived:
    """A request whose images and audio became text, and how much media that was."""

    request: GenerateContentRequest
    observations: list[str] = field(default_factory=list)
    images: int = 0
    image_tokens: int = 0
    video_tokens: int = 0
    audio_seconds: float = 0.0


@dataclass(frozen=True)
class MediaTokens:
    """What media counts as in usage, as on Gemini, whatever text the model was given for it."""

    image: int = 258  # per image
    audio_per_s: float = 32.0
    video_per_s: float = 263.0  # the frames at the default rate; a sound track counts as audio


@dataclass
class Outcome:
    """What a finished stream produced, for the final chunk and the non-streaming answer."""

    text: str = ""
    calls: list[FunctionCall] = field(default_factory=list)
    finish: FinishReason = FinishReason.STOP
    generated: int = 0
    cached: int = 0  # prompt tokens restored from a saved state rather than computed


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
    ) -> None:
        self.video_fps = video_fps  # frames a second looked at in a video part
        self._models = models
        self._vision = vision
        self._transcribe = transcribe  # 16 kHz speech → text
        self.media_tokens = media_tokens or MediaTokens()
        self._prefixes = prefixes or PrefixStore(spill_dir=None)
        self._warming: dict[str, asyncio.Task[None]] = {}  # cached contexts being computed
        self._formatters: dict[str, tuple[Formatter, ControlTokenGuard]] = {}
        self.output_token_limit = output_token_limit

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
            cached = await self._cached(loaded, request, resolve_cache)
            request = _with_cache(request, cached)
        perceived = await self._perceive(request, config_of(request).media_resolution)
        request = perceived.request
        config = request.generation_config or GenerationConfig()
        if request.model and self._models.spec(request.model).id != loaded.spec.id:
            raise InvalidArgument(
                f"the request names {request.model}, not models/{loaded.spec.id} of its URL"
            )
        messages = _messages(request, allow_empty=prefix_only)
        tools = _tool_specs(request.tools)
        mode = _calling_mode(request, tools)
        allowed = _allowed_functions(request, tools)
        json_schema, where = _response_schema(config)
        if json_schema is not None and mode is FunctionCallingMode.ANY:
            raise InvalidArgument("a forced function call cannot be combined with a JSON response")
        if json_schema is not None:
            messages = _with_system(
                messages,
                "Reply only with JSON that fits this JSON schema: " + json.dumps(json_schema),
            )
        offered = (
            [t for t in tools if t.name in allowed] if mode is not FunctionCallingMode.NONE else []
        )
        formatter, guard = self._formatter(loaded)
        rendered = await _render(formatter, guard, messages, offered)
        text = rendered.text
        functions = {t.name: t.parameters for t in offered}
        if mode is FunctionCallingMode.ANY:
            for name, parameters in functions.items():
                schema_grammar(parameters, f"functionDeclarations[{name}].parameters")
            json_schema, where = function_call_schema(functions), "functionDeclarations"
            text += TOOL_CALL_OPEN + "\n"
        grammar = (
            await _checked_grammar(loaded, json_schema, where) if json_schema is not None else None
        )
        call_grammar = None
        if mode is FunctionCallingMode.AUTO and offered and json_schema is None:
            # A free answer may begin a call: its grammar is checked now, before any text.
            for name, parameters in functions.items():
                schema_grammar(parameters, f"functionDeclarations[{name}].parameters")
            schema = function_call_schema(functions)
            call_grammar = await _checked_grammar(loaded, schema, "functionDeclarations")
        # A 20 MB prompt takes a while to tokenize: keep that off the event loop.
        tokens = await asyncio.to_thread(loaded.engine.tokenize, text)
        limit = loaded.engine.info.context_size
        if len(tokens) >= limit:
            raise InvalidArgument(
                f"the request is {len(tokens)} tokens; models/{loaded.spec.id} takes at most "
                f"{limit - 1} input tokens"
            )
        max_tokens = config.max_output_tokens or self.output_token_limit
        if max_tokens > self.output_token_limit:
            raise InvalidArgument(
                f"maxOutputTokens is {max_tokens}; models/{loaded.spec.id} allows at most "
                f"{self.output_token_limit}"
            )
        spec = loaded.spec
        capture_calls = mode is FunctionCallingMode.AUTO and bool(offered)
        if config.temperature is not None and config.temperature > spec.max_temperature:
            raise InvalidArgument(
                f"temperature is {config.temperature:g}; models/{spec.id} takes at most "
                f"{spec.max_temperature:g}"
            )
        params = SamplingParams(
            temperature=spec.temperature if config.temperature is None else config.temperature,
            top_p=spec.top_p if config.top_p is None else config.top_p,
            top_k=spec.top_k if config.top_k is None else config.top_k,
            max_tokens=max_tokens,
            seed=config.seed,
            presence_penalty=config.presence_penalty or 0.0,
            frequency_penalty=(
                config.frequency_penalty
                if config.frequency_penalty is not None
                else spec.json_frequency_penalty
                if json_schema is not None
                else 0.0
            ),
            grammar=grammar,
        )
        stops = tuple(config.stop_sequences or ()) + (rendered.stop if json_schema is None else ())
        prefix_len = 0
        if cached is not None:
            prefix_len = await self._cached_length(
                loaded, formatter, guard, cached, offered, tokens
            )
        return Prepared(
            image_tokens=perceived.image_tokens,
            video_tokens=perceived.video_tokens,
            audio_seconds=perceived.audio_seconds,
            observed_tokens=sum(loaded.engine.count_tokens(o) for o in perceived.observations),
            prefix_key=f"{loaded.spec.id}:{cached.name}" if cached is not None else None,
            prefix_len=prefix_len,
            model=loaded,
            tokens=tokens,
            params=params,
            stops=stops,
            forced_call=mode is FunctionCallingMode.ANY,
            enum_answer=(config.response_mime_type or "").lower() == ENUM_MIME,
            capture_calls=capture_calls,
            prompt_text=text,
            call_grammar=call_grammar,
            functions=functions,
        )

    async def _perceive(
        self, request: GenerateContentRequest, level: MediaResolution | None
    ) -> Perceived:
        """The request with each image and audio part replaced by the text of what was seen
        or heard in it."""
        found = [
            (i, j, part)
            for i, content in enumerate(request.contents)
            for j, part in enumerate(content.parts)
            if part.inline_data is not None
            and part.inline_data.mime_type.lower().startswith(("image/", "audio/", "video/"))
        ]
        perceived = Perceived(request)
        if not found:
            return perceived
        contents = [c.model_copy(update={"parts": list(c.parts)}) for c in request.contents]
        for i, j, part in found:
            where = f"contents[{i}].parts[{j}]"
            blob = part.inline_data
            assert blob is not None
            data = blob_bytes(blob.data, f"{where}.inlineData.data")
            mime = blob.mime_type.lower()
            seen_at = resolution_of(level, part.media_resolution)
            if part.video_metadata is not None and not mime.startswith("video/"):
                raise InvalidArgument(f"{where}.videoMetadata applies to video parts only")
            try:
                if mime.startswith("image/"):
                    text = await self._look(data, mime_base(mime), seen_at, perceived)
                elif mime.startswith("video/"):
                    clip = part.video_metadata or VideoMetadata()
                    text = await self._watch(data, mime, clip, seen_at, perceived)
                else:
                    text = await self._listen(data, mime, perceived)
            except InvalidArgument as exc:
                raise InvalidArgument(f"{where}.inlineData: {exc.message}") from None
            contents[i].parts[j] = Part(text=text)
            perceived.observations.append(text)
        perceived.request = request.model_copy(update={"contents": contents})
        return perceived

    async def _look(self, data: bytes, mime: str, at: Resolution, perceived: Perceived) -> str:
        vision = self._vision
        if vision is None:
            raise InvalidArgument("this server has no vision stage: images cannot be read")
        seen = await asyncio.to_thread(
            functools.partial(vision.observe, data, mime, max_side=at.max_side)
        )
        perceived.images += 1
        perceived.image_tokens += at.image_tokens(self.media_tokens.image)
        return f"[image {perceived.images}: {seen.text}]\n"

    async def _listen(self, data: bytes, mime: str, perceived: Perceived) -> str:
        samples = await asyncio.to_thread(decode_audio, data, mime)
        return (
            f"[audio, {samples.size / INPUT_RATE:.1f} s: {await self._hear(samples, perceived)}]\n"
        )

    async def _hear(self, samples: FloatArray, perceived: Perceived) -> str:
        if self._transcribe is None:
            raise InvalidArgument("this server has no speech recognition: audio cannot be read")
        seconds = samples.size / INPUT_RATE
        if seconds > MAX_AUDIO_PART_S:
            raise InvalidArgument(
                f"the audio lasts {seconds:.0f} s; at most {MAX_AUDIO_PART_S:.0f} s are taken"
            )
        said = await self._transcribe(samples)
        perceived.audio_seconds += seconds
        return f"'{said}'" if said else "no speech"

    async def _watch(
        self, data: bytes, mime: str, meta: VideoMetadata, at: Resolution, perceived: Perceived
    ) -> str:
        """A video (the clip `meta` cuts, at its frame rate): what its sampled frames show, in
        time order (a scene as long as it lasts), and what its sound track says; each of the
        two only when `meta` asks for that layer."""
        vision = self._vision
        if vision is None:
            raise InvalidArgument("this server has no vision stage: video cannot be read")
        fps = meta.fps or self.video_fps
        clip = await asyncio.to_thread(
            functools.partial(
                decode_video,
                data,
                mime,
                fps=fps,
                max_seconds=MAX_VIDEO_PART_S,
                start=meta.start_offset.total_seconds() if meta.start_offset else 0.0,
                end=meta.end_offset.total_seconds() if meta.end_offset else None,
            )
        )
        looks, hears = _layers(meta)
        pieces = []
        if looks:
            frames = [(t, fit(image, at.max_side)) for t, image in clip.frames]
            scenes = await asyncio.to_thread(_scenes, vision, frames)
            # Each frame counts as a picture at the resolution asked for; by default a second
            # of frames at the server's rate counts --video-tokens-per-s.
            frame_tokens = at.tokens or self.media_tokens.video_per_s / self.video_fps
            perceived.video_tokens += math.ceil(clip.seconds * fps * frame_tokens)
            spans = _spans(scenes, clip.seconds)
            pieces.append(
                "; ".join(f"{start:.0f}-{end:.0f} s: {text}" for start, end, text in spans)
            )
        if hears and clip.audio is not None:
            pieces.append(f"sound: {await self._hear(clip.audio, perceived)}")
        return f"[video, {clip.seconds:.1f} s: {' | '.join(pieces) or 'nothing asked for'}]\n"

    async def _cached(
        self,
        loaded: LoadedModel,
        request: GenerateContentRequest,
        resolve_cache: CacheResolver | None,
    ) -> CachedPrefix:
        name = request.cached_content or ""
        if resolve_cache is None:
            raise InvalidArgument("cachedContent can not be used on this endpoint")
        if request.system_instruction or request.tools or request.tool_config:
            raise InvalidArgument(CACHE_WITH_OVERRIDES)
        cached = await resolve_cache(name)
        if cached.model != loaded.spec.id:
            raise InvalidArgument(
                f"{cached.name} belongs to models/{cached.model}, not models/{loaded.spec.id}"
            )
        return cached

    async def _cached_length(
        self,
        loaded: LoadedModel,
        formatter: Formatter,
        guard: ControlTokenGuard,
        cached: CachedPrefix,
        tools: list[ToolSpec],
        tokens: list[int],
    ) -> int:
        """How many leading prompt tokens are the cached context's (its rendering alone, with
        the tools the prompt offers: a template writes them into the system turn)."""
        alone = _messages(
            GenerateContentRequest(
                contents=cached.contents, system_instruction=cached.system_instruction
            ),
            allow_empty=True,
        )
        text = (await _render(formatter, guard, alone, tools)).text
        own = await asyncio.to_thread(loaded.engine.tokenize, text)
        return min(common_prefix(own, tokens), len(tokens) - 1)

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
        await self._prefix_state(prepared, own_warming=True)
        return prepared.prefix_len

    def start_warming(self, model: str, cached: CachedPrefix) -> None:
        """Compute a new cache's state in the background; a request using it meanwhile waits
        for that work instead of repeating it."""
        key = f"{model}:{cached.name}"
        if key in self._warming:
            return

        async def warm() -> None:
            try:
                await self.warm_cache(model, cached)
            except Exception:
                log.exception("computing the state of %s failed; it is computed on use", key)
            finally:
                self._warming.pop(key, None)

        self._warming[key] = asyncio.create_task(warm())

    def forget_cache(self, model: str, name: str) -> None:
        self._prefixes.drop(f"{model}:{name}")

    async def _prefix_state(
        self, prepared: Prepared, *, own_warming: bool = False
    ) -> tuple[PrefixState, int] | None:
        """The saved state to start from, and how many prompt tokens it covers: the
        conversation's own, the cached context's, or that of a recent prompt that began the
        same way — whichever covers most."""
        engine = prepared.model.engine
        store = self._prefixes
        found: list[tuple[PrefixState, int]] = []
        if prepared.prefix_key is not None and prepared.prefix_len > 0:
            want = prepared.tokens[: prepared.prefix_len]
            warming = self._warming.get(prepared.prefix_key)
            if warming is not None and not own_warming:
                await asyncio.shield(warming)
            state = await asyncio.to_thread(store.get, prepared.prefix_key)
            if state is None or list(state.tokens) != want:
                state = await engine.snapshot(want)
                await asyncio.to_thread(store.put, prepared.prefix_key, state)
            found.append((state, prepared.prefix_len))
        if prepared.state_key is not None:
            own = await asyncio.to_thread(store.get, prepared.state_key)
            if own is not None and own.model == prepared.model.spec.id:
                shared = min(common_prefix(own.tokens, prepared.tokens), len(prepared.tokens) - 1)
                if shared > 0:
                    found.append((own, shared))
        if not found:
            recent = store.best_match(
                prepared.model.spec.id, prepared.tokens, minimum=IMPLICIT_MIN_TOKENS
            )
            if recent is not None:
                found.append(recent)
        return max(found, key=lambda pair: pair[1], default=None)

    async def _leave_state(self, prepared: Prepared) -> None:
        """After a turn of a conversation that keeps its state, or any long prompt, save the
        state: the next turn begins the same way, even if other requests run in between."""
        keep = prepared.state_key is not None
        if not keep and len(prepared.tokens) < IMPLICIT_MIN_TOKENS:
            return
        state = await prepared.model.engine.snapshot()
        if common_prefix(state.tokens, prepared.tokens) < len(prepared.tokens) - 1:
            return  # another request ran first: what is held now is not this conversation
        if prepared.state_key is not None:
            await asyncio.to_thread(self._prefixes.put, prepared.state_key, state)
        elif len(state.tokens) >= IMPLICIT_MIN_TOKENS:
            key = "implicit:" + hashlib.sha256(repr(state.tokens).encode()).hexdigest()[:24]
            await asyncio.to_thread(self._prefixes.put, key, state)

    def forget_state(self, key: str) -> None:
        """A conversation that ended: its saved state is no longer worth its memory."""
        self._prefixes.drop(key)

    def _formatter(self, loaded: LoadedModel) -> tuple[Formatter, ControlTokenGuard]:
        cached = self._formatters.get(loaded.spec.id)
        if cached is not None:
            return cached
        info = loaded.engine.info
        formatter: Formatter
        if loaded.spec.prompt_style == "template" and info.chat_template:
            formatter = TemplateFormatter(
                info.chat_template, bos_token=info.bos_token, eos_token=info.eos_token
            )
        else:
            formatter = PlainFormatter()
        pair = (formatter, ControlTokenGuard(info.control_tokens))
        self._formatters[loaded.spec.id] = pair
        return pair

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
        response_id = secrets.token_urlsafe(12)
        outcome = Outcome()
        async for delta in self._run(prepared, outcome):
            yield self._chunk(prepared, response_id, [Part(text=delta)])
        parts = [Part(function_call=c) for c in outcome.calls]
        final = self._chunk(prepared, response_id, parts or [Part(text="")])
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
        found = await self._prefix_state(prepared)
        if found is not None and found[1] > _held(prepared):
            return False  # restoring that state is the real request's job, and cheap
        done = await prepared.model.engine.warm(prepared.tokens)
        if done and state_key is not None:
            await self._leave_state(prepared)  # kept even if other sessions come first
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
        response = self._chunk(prepared, secrets.token_urlsafe(12), parts or [Part(text="")])
        response.candidates[0].finish_reason = outcome.finish
        response.usage_metadata = self._usage(prepared, outcome)
        return response

    async def _run(self, prepared: Prepared, outcome: Outcome) -> AsyncIterator[str]:
        """Yield visible text as it is generated; fill `outcome` when the stream ends."""
        stops = StopMatcher(prepared.stops)
        split = MarkerSplit(TOOL_CALL_OPEN, CALL_OPENERS) if prepared.capture_calls else None
        trim = WhitespaceTrim()
        # A forced call or an enum answer is only meaningful whole: hold it back until the end.
        held: list[str] | None = None
        if prepared.forced_call:
            held = [TOOL_CALL_OPEN]
        elif prepared.enum_answer:
            held = []
        cause = FinishCause.LENGTH
        found = await self._prefix_state(prepared)
        prefix = None
        if found is not None:
            prefix, outcome.cached = found
        stream = prepared.model.engine.stream(prepared.tokens, prepared.params, prefix=prefix)
        try:
            async for piece in stream:
                if piece.token_id is not None:
                    outcome.generated += 1
                visible = stops.feed(piece.text)
                if piece.finish is not None and not stops.stopped:
                    cause = piece.finish
                    visible += stops.flush()
                if stops.stopped:
                    cause = FinishCause.END_OF_TURN
                if held is not None:
                    held.append(visible)
                    visible = ""
                elif split is not None:
                    visible = split.feed(visible)
                    if stops.stopped or piece.finish is not None:
                        visible += split.flush()
                visible = trim.feed(visible)
                if visible:
                    outcome.text += visible
                    yield visible
                if stops.stopped or _opens_call(split, prepared):
                    break
        finally:
            await stream.aclose()
        raw = "".join(held) if held is not None else (split.captured if split else None)
        if _opens_call(split, prepared):
            raw, cause = await self._decode_call(prepared, outcome)
        if cause is not FinishCause.CANCELLED:
            await self._leave_state(prepared)
        outcome.finish = (
            FinishReason.MAX_TOKENS if cause is FinishCause.LENGTH else FinishReason.STOP
        )
        if prepared.enum_answer:
            if answer := _json_string("".join(held or [])):
                outcome.text += answer
                yield answer
            return
        if not raw:
            return
        parsed = _parse_calls(raw, prepared.functions)
        if parsed is not None:
            outcome.calls = parsed
        elif raw.lstrip().startswith(TOOL_CALL_OPEN):
            if outcome.finish is FinishReason.STOP:
                outcome.finish = FinishReason.MALFORMED_FUNCTION_CALL
        elif text := trim.feed(raw):  # an answer that merely looked like JSON: it is text
            outcome.text += text
            yield text

    async def _decode_call(self, prepared: Prepared, outcome: Outcome) -> tuple[str, FinishCause]:
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
        stream = engine.stream(tokens, params)
        try:
            async for piece in stream:
                outcome.generated += piece.token_id is not None
                raw += piece.text
                cause = piece.finish or cause
        finally:
            await stream.aclose()
        return raw, cause

    def _usage(self, prepared: Prepared, outcome: Outcome) -> UsageMetadata:
        details = prepared.prompt_details(self.media_tokens)
        prompt = sum(d.token_count for d in details)
        generated = outcome.generated
        return UsageMetadata(
            prompt_token_count=prompt,
            cached_content_token_count=outcome.cached or None,
            candidates_token_count=generated,
            total_token_count=prompt + generated,
            prompt_tokens_details=details,
            candidates_tokens_details=(
                [ModalityTokenCount(modality=Modality.TEXT, token_count=generated)]
                if generated
                else None
            ),
        )

    def _chunk(
        self, prepared: Prepared, response_id: str, parts: list[Part]
    ) -> GenerateContentResponse:
        return GenerateContentResponse(
            candidates=[Candidate(content=Content(role=Role.MODEL, parts=parts), index=0)],
            model_version=prepared.model.spec.id,
            response_id=response_id,
        )


def _scenes(vision: Vision, frames: list[tuple[float, Image.Image]]) -> list[tuple[float, str]]:
    """(start, what is seen) for each frame, a frame like the one before taking its text."""
    seen: list[tuple[float, str]] = []
    watch = SceneWatch()
    for at, image in frames:
        seen.append((at, vision.observe_image(image).text if watch.is_new(image) else seen[-1][1]))
    return seen


def _spans(scenes: list[tuple[float, str]], end: float) -> list[tuple[float, float, str]]:
    """Runs of frames that show the same thing, as (start, end, text)."""
    spans: list[tuple[float, float, str]] = []
    for (at, text), (following, _) in zip(scenes, [*scenes[1:], (end, "")], strict=True):
        if spans and spans[-1][2] == text:
            spans[-1] = (spans[-1][0], following, text)
        else:
            spans.append((at, following, text))
    return spans


def config_of(request: GenerateContentRequest) -> GenerationConfig:
    return request.generation_config or GenerationConfig()


def _layers(meta: VideoMetadata) -> tuple[bool, bool]:
    """Whether a video's frames are looked at, and its sound heard: both unless the part's
    contentLayers name only some (TRANSCRIPT is a transcript of the sound, AUDIO the sound)."""
    layers = set(meta.content_layers or ()) - {ContentLayer.UNSPECIFIED}
    if not layers:
        return True, True
    return ContentLayer.FRAMES in layers, bool(
        layers & {ContentLayer.AUDIO, ContentLayer.TRANSCRIPT}
    )


def _opens_call(split: MarkerSplit | None, prepared: Prepared) -> bool:
    """Whether a free answer has begun a call: the call marker anywhere, or a call's start
    first. (An answer under a JSON response schema opens with a brace: that is no call.)"""
    captured = split.captured if split is not None else None
    return (
        prepared.call_grammar is not None
        and captured is not None
        and captured.lstrip().startswith((TOOL_CALL_OPEN, *CALL_STARTS))
    )


def _held(prepared: Prepared) -> int:
    """How many leading prompt tokens the engine holds state for right now."""
    return common_prefix(prepared.model.engine.cached_prefix, prepared.tokens)


def _with_cache(request: GenerateContentRequest, cached: CachedPrefix) -> GenerateContentRequest:
    return request.model_copy(
        update={
            "contents": [*cached.contents, *request.contents],
            "system_instruction": cached.system_instruction,
            "tools": cached.tools,
            "tool_config": cached.tool_config,
            "cached_content": None,
        }
    )


def _json_string(raw: str) -> str:
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        return ""  # cut short by maxOutputTokens: finishReason says so
    return value if isinstance(value, str) else ""


def _parse_calls(raw: str, functions: dict[str, dict[str, Any]]) -> list[FunctionCall] | None:
    raw = raw.strip()
    if not raw.startswith(TOOL_CALL_OPEN):
        fenced = _FENCE.match(raw)
        raw = TOOL_CALL_OPEN + (fenced.group(1) if fenced else raw) + TOOL_CALL_CLOSE
    calls = []
    for block in _TOOL_BLOCK.findall(raw):
        try:
            data = json.loads(block)
        except json.JSONDecodeError:
            return None
        if not isinstance(data, dict) or data.get("name") not in functions:
            return None
        args = data.get("arguments", data.get("args", {}))
        if not isinstance(args, dict):
            return None
        calls.append(FunctionCall(id=secrets.token_hex(4), name=str(data["name"]), args=args))
    return calls or None


def _text_of(content: Content, where: str, *, allow_calls: bool) -> tuple[str, list[ToolCall]]:
    texts: list[str] = []
    calls: list[ToolCall] = []
    for j, part in enumerate(content.parts):
        kind = part.kind
        if kind == "text":
            if not part.thought:
                texts.append(part.text or "")
        elif kind == "function_call" and allow_calls and part.function_call is not None:
            calls.append(ToolCall(part.function_call.name, part.function_call.args))
        elif kind in ("inline_data", "file_data"):
            blob = part.inline_data or part.file_data
            mime = getattr(blob, "mime_type", None) or "unknown"
            raise InvalidArgument(
                f"{where}.parts[{j}]: {_camel(kind)} ({mime}) is not supported; this server "
                "reads text and inlineData images, audio and video"
            )
        elif kind != "function_response":
            raise InvalidArgument(
                f"{where}.parts[{j}]: {_camel(kind)} parts are not supported here"
            )
    return "".join(texts), calls


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(w.title() for w in rest)


def _messages(request: GenerateContentRequest, *, allow_empty: bool = False) -> list[Message]:
    if not request.contents and not allow_empty:
        raise InvalidArgument("contents must not be empty")
    messages: list[Message] = []
    if request.system_instruction is not None:
        text, _ = _text_of(request.system_instruction, "systemInstruction", allow_calls=False)
        if text:
            messages.append(Message("system", text))
    for i, content in enumerate(request.contents):
        where = f"contents[{i}]"
        if not content.parts:
            raise InvalidArgument(f"{where} has no parts")
        is_model = content.role is Role.MODEL
        text, calls = _text_of(content, where, allow_calls=is_model)
        if is_model:
            messages.append(Message("assistant", text, tool_calls=tuple(calls)))
            continue
        for part in content.parts:
            if part.function_response is not None:
                fr = part.function_response
                messages.append(Message("tool", json.dumps(fr.response), name=fr.name))
        if text:
            messages.append(Message("user", text))
    return messages


async def _render(
    formatter: Formatter, guard: ControlTokenGuard, messages: list[Message], tools: list[ToolSpec]
) -> RenderedPrompt:
    """The prompt, client text defused; megabytes of it take a while: not on the event loop."""

    def render() -> RenderedPrompt:
        return formatter.render(
            [_defused_message(guard, m) for m in messages], [_defused_tool(guard, t) for t in tools]
        )

    if sum(len(m.content) for m in messages) <= INLINE_RENDER_CHARS:
        return render()
    return await asyncio.to_thread(render)


def _defused_message(guard: ControlTokenGuard, m: Message) -> Message:
    return replace(
        m,
        content=guard.defuse(m.content),
        tool_calls=tuple(
            ToolCall(guard.defuse(c.name), guard.defuse_all(c.arguments)) for c in m.tool_calls
        ),
        name=guard.defuse(m.name) if m.name is not None else None,
    )


def _defused_tool(guard: ControlTokenGuard, tool: ToolSpec) -> ToolSpec:
    return replace(
        tool,
        description=guard.defuse(tool.description),
        parameters=guard.defuse_all(tool.parameters),
    )


def _with_system(messages: list[Message], text: str) -> list[Message]:
    if messages and messages[0].role == "system":
        return [Message("system", messages[0].content + "\n\n" + text), *messages[1:]]
    return [Message("system", text), *messages]


def _tool_specs(tools: list[Tool] | None) -> list[ToolSpec]:
    specs: list[ToolSpec] = []
    # Tools of other kinds were refused where the request was parsed (protocol/decisions.py).
    for i, tool in enumerate(tools or []):
        for j, decl in enumerate(tool.function_declarations or []):
            where = f"tools[{i}].functionDeclarations[{j}]"
            if decl.parameters_json_schema is not None:
                params = decl.parameters_json_schema
            elif decl.parameters is not None:
                params = to_json_schema(decl.parameters, f"{where}.parameters")
            else:
                params = {"type": "object", "properties": {}}
            specs.append(ToolSpec(decl.name, decl.description or "", params))
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise InvalidArgument("function declarations must have distinct names")
    return specs


def _calling_mode(request: GenerateContentRequest, tools: list[ToolSpec]) -> FunctionCallingMode:
    fcc = request.tool_config.function_calling_config if request.tool_config else None
    mode = fcc.mode if fcc and fcc.mode else FunctionCallingMode.AUTO
    if mode in (FunctionCallingMode.MODE_UNSPECIFIED, FunctionCallingMode.VALIDATED):
        mode = FunctionCallingMode.AUTO
    if mode is FunctionCallingMode.ANY and not tools:
        raise InvalidArgument(
            "functionCallingConfig mode ANY needs at least one function declaration"
        )
    return mode if tools else FunctionCallingMode.NONE


def _allowed_functions(request: GenerateContentRequest, tools: list[ToolSpec]) -> set[str]:
    names = {t.name for t in tools}
    fcc = request.tool_config.function_calling_config if request.tool_config else None
    if fcc is None or not fcc.allowed_function_names:
        return names
    unknown = set(fcc.allowed_function_names) - names
    if unknown:
        raise InvalidArgument(f"allowedFunctionNames names undeclared functions: {sorted(unknown)}")
    return set(fcc.allowed_function_names)


async def _checked_grammar(loaded: LoadedModel, schema: dict[str, Any], where: str) -> str:
    """The grammar for `schema`, parsed by the engine before anything is sampled under it."""
    grammar = schema_grammar(schema, where)
    if not await asyncio.to_thread(loaded.engine.check_grammar, grammar):
        log.warning("the grammar built from %s did not parse:\n%s", where, grammar[:2000])
        raise InvalidArgument(f"{where} cannot be decoded under: its grammar does not parse")
    return grammar


def _response_schema(config: GenerationConfig) -> tuple[dict[str, Any] | None, str]:
    """The JSON Schema the answer must fit, and where the request gave it."""
    mime = (config.response_mime_type or TEXT_MIME).lower()
    has_schema = config.response_schema is not None or config.response_json_schema is not None
    where = "generationConfig.responseSchema"
    if mime == TEXT_MIME:
        if has_schema:
            raise InvalidArgument("responseSchema needs responseMimeType application/json")
        return None, where
    if mime == ENUM_MIME:
        schema = config.response_schema
        if schema is None or not schema.enum:
            raise InvalidArgument(f"responseMimeType {ENUM_MIME} needs a responseSchema with enum")
        return {"type": "string", "enum": list(schema.enum)}, f"{where}.enum"
    if mime != JSON_MIME:
        raise InvalidArgument(
            f"responseMimeType {config.response_mime_type!r} is not supported; "
            f"use {TEXT_MIME}, {JSON_MIME} or {ENUM_MIME}"
        )
    if config.response_schema is not None and config.response_json_schema is not None:
        raise InvalidArgument("give responseSchema or responseJsonSchema, not both")
    if config.response_json_schema is not None:
        return config.response_json_schema, "generationConfig.responseJsonSchema"
    if config.response_schema is not None:
        return to_json_schema(config.response_schema, where), where
    return {"type": "object"}, where
