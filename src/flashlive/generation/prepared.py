"""A request made ready for the engine: its tokens, sampling, output rules and media counts,
and what the stream finally produced."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from flashlive.cache.prefix import PrefixAsk
from flashlive.engine import Priority, SamplingParams
from flashlive.errors import InvalidArgument
from flashlive.generation.prompt import ToolSpec
from flashlive.models import LoadedModel, ModelSpec
from flashlive.protocol.content import FunctionCall
from flashlive.protocol.generate import FinishReason, GenerationConfig, ModalityTokenCount
from flashlive.usage import MediaTokens, MediaUse, prompt_details


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
    offered: tuple[ToolSpec, ...] = ()  # the functions the prompt shows
    prefix_key: str | None = None  # the cachedContent whose state this prompt begins with
    prefix_len: int = 0
    state_key: str | None = None  # a conversation that keeps its own state between turns
    priority: Priority = Priority.STANDARD  # the engine serves lower values first
    media: MediaUse = field(default_factory=MediaUse)  # images, video, audio in the prompt

    def prompt_details(self, rates: MediaTokens) -> list[ModalityTokenCount]:
        """Prompt tokens by modality, as usage reports (and bills) them."""
        return prompt_details(len(self.tokens), self.media, rates)

    @property
    def prefix_ask(self) -> PrefixAsk:
        """What this prompt may start from and leave behind, for the prefix-state policy."""
        return PrefixAsk(
            model=self.model.spec.id,
            tokens=self.tokens,
            cached_key=self.prefix_key,
            cached_len=self.prefix_len,
            state_key=self.state_key,
        )


@dataclass
class Outcome:
    """What a finished stream produced, for the final chunk and the non-streaming answer."""

    text: str = ""
    calls: list[FunctionCall] = field(default_factory=list)
    finish: FinishReason = FinishReason.STOP
    generated: int = 0
    cached: int = 0  # prompt tokens restored from a saved state rather than computed


def sampling_params(
    spec: ModelSpec,
    config: GenerationConfig,
    *,
    max_tokens: int,
    grammar: str | None,
    constrained: bool,
) -> SamplingParams:
    """The request's sampling, the model's defaults where it gives none; a temperature over the
    model's maximum is refused. (`constrained`: the answer fits a JSON schema.)"""
    if config.temperature is not None and config.temperature > spec.max_temperature:
        raise InvalidArgument(
            f"temperature is {config.temperature:g}; models/{spec.id} takes at most "
            f"{spec.max_temperature:g}"
        )
    if config.frequency_penalty is not None:
        frequency_penalty = config.frequency_penalty
    else:
        frequency_penalty = spec.json_frequency_penalty if constrained else 0.0
    return SamplingParams(
        temperature=spec.temperature if config.temperature is None else config.temperature,
        top_p=spec.top_p if config.top_p is None else config.top_p,
        top_k=spec.top_k if config.top_k is None else config.top_k,
        max_tokens=max_tokens,
        seed=config.seed,
        presence_penalty=config.presence_penalty or 0.0,
        frequency_penalty=frequency_penalty,
        grammar=grammar,
    )


def check_lengths(spec: ModelSpec, tokens: int, context: int, max_tokens: int, limit: int) -> None:
    """Refuse a prompt the context cannot hold, or a maxOutputTokens over the server's limit."""
    if tokens >= context:
        raise InvalidArgument(
            f"the request is {tokens} tokens; models/{spec.id} takes at most "
            f"{context - 1} input tokens"
        )
    if max_tokens > limit:
        raise InvalidArgument(
            f"maxOutputTokens is {max_tokens}; models/{spec.id} allows at most {limit}"
        )
