"""cachedContent: the context a cachedContents resource puts in front of a request, and how many
of the prompt's tokens are that context's."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from flashlive.engine import common_prefix
from flashlive.errors import InvalidArgument
from flashlive.generation.guard import ControlTokenGuard
from flashlive.generation.messages import messages_of, render
from flashlive.generation.prompt import Formatter, ToolSpec
from flashlive.models import LoadedModel
from flashlive.protocol.content import Content, Tool, ToolConfig
from flashlive.protocol.generate import GenerateContentRequest

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


async def resolve_cached(
    loaded: LoadedModel, request: GenerateContentRequest, resolve_cache: CacheResolver | None
) -> CachedPrefix:
    """The cached context `request` names, refused where it cannot be used."""
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


def with_cache(request: GenerateContentRequest, cached: CachedPrefix) -> GenerateContentRequest:
    """`request` with the cached context in front of its contents."""
    return request.model_copy(
        update={
            "contents": [*cached.contents, *request.contents],
            "system_instruction": cached.system_instruction,
            "tools": cached.tools,
            "tool_config": cached.tool_config,
            "cached_content": None,
        }
    )


async def cached_length(
    loaded: LoadedModel,
    formatter: Formatter,
    guard: ControlTokenGuard,
    cached: CachedPrefix,
    tools: list[ToolSpec],
    tokens: list[int],
) -> int:
    """How many leading prompt tokens are the cached context's (its rendering alone, with
    the tools the prompt offers: a template writes them into the system turn)."""
    alone = messages_of(
        GenerateContentRequest(
            contents=cached.contents, system_instruction=cached.system_instruction
        ),
        allow_empty=True,
    )
    text = (await render(formatter, guard, alone, tools)).text
    own = await asyncio.to_thread(loaded.engine.tokenize, text)
    return min(common_prefix(own, tokens), len(tokens) - 1)
