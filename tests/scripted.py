"""The one engine double of the tests: it plays back what a model would write and records what it
was asked. A token is a character, so prompts read back as text.

It keeps the state a real engine keeps (the tokens it holds, what each call had to compute), so
the prefix-state policy and the generation service can be tested against it; it fails on cue,
as a crashed decode would; and it notices a stream closed early (a cancelled generation).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from flashlive.engine import FinishCause, PrefixState, SamplingParams, TokenPiece, common_prefix
from flashlive.engine.base import CancelToken, EngineInfo, EngineStats, Priority
from flashlive.engine.llamacpp import LlamaCppOptions
from flashlive.generation.service import GenerationService
from flashlive.models import BUILTIN_MODELS, LoadedModel, ModelManager

MODEL = "gemma-3-270m"  # prompted as plain text: no chat template needed


@dataclass
class Asked:
    prompt: str
    params: SamplingParams
    prefix: PrefixState | None = None


@dataclass
class Script:
    """What one stream writes, piece by piece; then `failure`, if any, is raised."""

    pieces: list[str]
    failure: BaseException | None = None


@dataclass
class FakeEngine:
    """Each stream plays the next script (a list of pieces, or a `Script`)."""

    scripts: list[list[str] | Script] = field(default_factory=list)
    context_size: int = 4096
    grammars_parse: bool = True
    asked: list[Asked] = field(default_factory=list)
    prefilled: list[int] = field(default_factory=list)  # tokens computed, call by call
    restored: list[PrefixState] = field(default_factory=list)  # states loaded by a stream
    cancelled: int = 0  # streams that ended before their script did
    closed: bool = False
    held: Sequence[int] = ()  # the one sequence it keeps (`evict` drops it)
    queued: int = 0
    active: int = 0
    priorities: list[Priority] = field(default_factory=list)  # of each stream, in order
    keeper: Callable[[PrefixState], None] | None = None  # set by `retain`

    @property
    def stats(self) -> EngineStats:
        return EngineStats(resident=int(bool(self.held)), kv_used=len(self.held))

    def resident(self, tokens: Sequence[int]) -> int:
        return common_prefix(self.held, tokens)

    def retain(self, tokens: Sequence[int], on_evict: Callable[[PrefixState], None]) -> bool:
        if common_prefix(self.held, tokens) < len(tokens) - 1:
            return False
        self.keeper = on_evict
        return True

    def evict(self) -> None:
        """Another request took the sequence: its keeper, if any, gets the state first."""
        keeper, self.keeper = self.keeper, None
        if keeper is not None and self.held:
            keeper(PrefixState(MODEL, tuple(self.held), b"state"))
        self.held = ()

    @property
    def info(self) -> EngineInfo:
        return EngineInfo(MODEL, self.context_size, None, "", "")

    def tokenize(self, text: str) -> list[int]:
        return [ord(c) for c in text]

    def count_tokens(self, text: str) -> int:
        return len(text)

    def check_grammar(self, grammar: str) -> bool:
        return self.grammars_parse

    def _prefill(self, tokens: Sequence[int], prefix: PrefixState | None = None) -> None:
        held = common_prefix(self.held, tokens)
        if held < len(self.held) - 16:
            self.evict()  # another conversation's sequence
        if prefix is not None and common_prefix(prefix.tokens, tokens) > held:
            self.restored.append(prefix)
            held = common_prefix(prefix.tokens, tokens)
        self.prefilled.append(len(tokens) - held)
        self.held = tuple(tokens)

    async def stream(
        self,
        prompt: Sequence[int],
        params: SamplingParams,
        cancel: CancelToken | None = None,
        prefix: PrefixState | None = None,
        priority: Priority = Priority.STANDARD,
        keep: Callable[[PrefixState], None] | None = None,
    ) -> AsyncGenerator[TokenPiece, None]:
        self.priorities.append(priority)
        self.asked.append(Asked("".join(map(chr, prompt)), params, prefix))
        script = self.scripts[len(self.asked) - 1]
        if not isinstance(script, Script):
            script = Script(script)
        self._prefill(prompt, prefix)
        if keep is not None:
            self.keeper = keep  # it holds this prompt from here on
        finished = False
        try:
            for i, piece in enumerate(script.pieces[: params.max_tokens]):
                if cancel is not None and cancel.cancelled:
                    finished = True
                    yield TokenPiece("", None, FinishCause.CANCELLED)
                    return
                yield TokenPiece(piece, i)
            if script.failure is not None:
                finished = True
                raise script.failure
            cut = len(script.pieces) > params.max_tokens
            finished = True
            yield TokenPiece("", None, FinishCause.LENGTH if cut else FinishCause.END_OF_TURN)
        finally:
            self.cancelled += not finished

    async def snapshot(self, tokens: Sequence[int]) -> PrefixState:
        self._prefill(tokens)
        return PrefixState(MODEL, tuple(self.held), b"state")

    async def warm(self, prefix: Sequence[int]) -> bool:
        self._prefill(prefix)
        return True

    async def aclose(self) -> None:
        self.closed = True


def models_over(tmp_path: Path, engine: FakeEngine, **spec: Any) -> ModelManager:
    """The built-in models, with `engine` already loaded as the plain-text one."""
    specs = [replace(s, **spec) if s.id == MODEL else s for s in BUILTIN_MODELS]
    models = ModelManager(specs, models_dir=tmp_path, options=LlamaCppOptions())
    models._loaded[MODEL] = LoadedModel(spec=models.spec(MODEL), engine=engine)
    return models


def service_over(tmp_path: Path, engine: FakeEngine, **options: Any) -> GenerationService:
    return GenerationService(models_over(tmp_path, engine), output_token_limit=64, **options)
