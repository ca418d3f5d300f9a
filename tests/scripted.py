"""A scripted engine for unit tests of the generation service: it plays back what a model would
write and records what it was asked. A token is a character, so prompts read back as text."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flashlive.engine import FinishCause, PrefixState, SamplingParams, TokenPiece
from flashlive.engine.base import CancelToken, EngineInfo
from flashlive.engine.llamacpp import LlamaCppOptions
from flashlive.generation.service import GenerationService
from flashlive.models import BUILTIN_MODELS, LoadedModel, ModelManager

MODEL = "gemma-3-270m"  # prompted as plain text: no chat template needed


@dataclass
class Asked:
    prompt: str
    params: SamplingParams


@dataclass
class ScriptedEngine:
    """Each stream plays the next script; a token is a character, so prompts read back."""

    scripts: list[list[str]]
    asked: list[Asked] = field(default_factory=list)
    info: EngineInfo = field(default_factory=lambda: EngineInfo(MODEL, 4096, None, "", ""))
    cached_prefix: Sequence[int] = ()

    def tokenize(self, text: str) -> list[int]:
        return [ord(c) for c in text]

    def count_tokens(self, text: str) -> int:
        return len(text)

    def check_grammar(self, grammar: str) -> bool:
        return True

    async def stream(
        self,
        prompt: Sequence[int],
        params: SamplingParams,
        cancel: CancelToken | None = None,
        prefix: PrefixState | None = None,
    ) -> AsyncGenerator[TokenPiece, None]:
        self.asked.append(Asked("".join(map(chr, prompt)), params))
        script = self.scripts[len(self.asked) - 1]
        for i, piece in enumerate(script[: params.max_tokens]):
            yield TokenPiece(piece, i)
        cut = len(script) > params.max_tokens
        yield TokenPiece("", None, FinishCause.LENGTH if cut else FinishCause.END_OF_TURN)

    async def snapshot(self, tokens: Sequence[int] | None = None) -> PrefixState:
        return PrefixState(MODEL, tuple(tokens or ()), b"")


def service_over(tmp_path: Path, engine: ScriptedEngine, **options: Any) -> GenerationService:
    models = ModelManager(list(BUILTIN_MODELS), models_dir=tmp_path, options=LlamaCppOptions())
    models._loaded[MODEL] = LoadedModel(spec=models.spec(MODEL), engine=engine)  # type: ignore[arg-type]
    return GenerationService(models, output_token_limit=64, **options)
