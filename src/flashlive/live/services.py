"""What every Live session shares: the generator, and speech models loaded once, on first need."""

from __future__ import annotations

import asyncio
import logging
import shutil
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Generic, Protocol, TypeVar

from flashlive.errors import Unavailable
from flashlive.generation.service import CacheResolver, GenerationService
from flashlive.ledger.records import UsageSink
from flashlive.models import ModelManager
from flashlive.perception.asr import Transcriber
from flashlive.perception.tts import (
    EspeakSynthesizer,
    PiperSynthesizer,
    Synthesizer,
    load_synthesizer,
)
from flashlive.perception.vad import SileroVad
from flashlive.perception.vision import Vision
from flashlive.protocol.live import Setup
from flashlive.store import MemoryStore, Store

log = logging.getLogger(__name__)
T = TypeVar("T")


class Lazy(Generic[T]):
    """A model loaded by the first caller; later callers share it (and wait for the load)."""

    def __init__(self, name: str, load: Callable[[], Awaitable[T]]) -> None:
        self._name = name
        self._load = load
        self._lock = asyncio.Lock()
        self.value: T | None = None

    async def get(self) -> T:
        if self.value is not None:
            return self.value
        async with self._lock:
            if self.value is None:
                log.info("loading %s", self._name)
                self.value = await self._load()
        return self.value


@dataclass(frozen=True)
class LiveLimits:
    max_frame_bytes: int = 4 * 1024 * 1024
    send_timeout_s: float = 10.0  # a client that reads nothing for this long is disconnected
    setup_timeout_s: float = 10.0  # a connection that sends no setup this long is closed
    outbox_size: int = 64  # server messages waiting for the socket
    audio_queue_size: int = 64  # client audio chunks waiting for the VAD
    turn_queue_size: int = 8  # user turns waiting for the model
    max_connection_s: float = 0.0  # a connection is closed after this long (0: never)
    goaway_notice_s: float = 10.0  # goAway is sent this long before that close
    resume_ttl_s: float = 2 * 3600.0  # a resumption handle lives this long after last use


class Perception:
    def __init__(self, tts: str = "auto") -> None:
        self.vad = Lazy("Silero VAD", lambda: asyncio.to_thread(SileroVad.load))
        self.asr = Lazy("Whisper tiny.en", lambda: asyncio.to_thread(Transcriber.load))
        self.tts = Lazy("speech synthesis", lambda: asyncio.to_thread(_synthesizer, tts))

    async def warm_up(self) -> None:
        await asyncio.gather(self.vad.get(), self.asr.get(), self.tts.get())

    def close(self) -> None:
        if self.asr.value is not None:
            self.asr.value.close()
        if self.tts.value is not None:
            self.tts.value.close()


def _synthesizer(kind: str) -> Synthesizer:
    """`auto` falls back from Piper to espeak-ng; a voice asked for by name is that one or none."""
    if kind == "espeak":
        if shutil.which("espeak-ng") is None:
            raise Unavailable("--tts espeak: the espeak-ng binary is not installed")
        return EspeakSynthesizer()
    if kind == "piper":
        try:
            return PiperSynthesizer.load()
        except Exception as exc:  # whatever stops the voice loading, the choice can't be honoured
            raise Unavailable(f"--tts piper: the Piper voice does not load: {exc}") from exc
    return load_synthesizer()


class Grant(Protocol):
    """What an ephemeral token lets one Live session do (`auth.py` issues them)."""

    @property
    def key_hash(self) -> str:
        """The key that created the token: it is billed, its quota spent, its handles used."""

    @property
    def expire_time(self) -> datetime:
        """After this (UTC) the session may send nothing more: it is closed."""

    def constrain(self, setup: Setup) -> Setup:
        """The setup with the token's locked fields imposed."""

    async def admit(self, *, resuming: bool) -> None:
        """Spend one use for a new session (a resumed one is free); raise when refused."""


@dataclass
class LiveServices:
    models: ModelManager
    generation: GenerationService
    perception: Perception
    limits: LiveLimits
    ledger: UsageSink | None = None  # one record per answered turn, when set
    caches: Callable[[str], CacheResolver] | None = None  # a key hash's cachedContents, when set
    # Raises ResourceExhausted when a key hash is over its quota, when quotas are set.
    quota: Callable[[str], None] | None = None
    # Resumption state and ephemeral tokens: in memory unless a persistent store is configured.
    store: Store = field(default_factory=MemoryStore)
    # Resumable sessions open in this process, by store key: ends that one (and waits for it)
    # when a client resumes it on a new connection.
    holders: dict[str, Callable[[], Awaitable[None]]] = field(default_factory=dict)
    vision: Vision | None = None  # camera frames → observations, when set
