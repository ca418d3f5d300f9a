"""What every Live session shares: the generator, and speech models loaded once, on first need."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from flashlive.generation.service import CacheResolver, GenerationService
from flashlive.ledger.records import UsageSink
from flashlive.models import ModelManager
from flashlive.perception.asr import Transcriber
from flashlive.perception.tts import EspeakSynthesizer, Synthesizer, load_synthesizer
from flashlive.perception.vad import SileroVad

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
    outbox_size: int = 64  # server messages waiting for the socket
    audio_queue_size: int = 64  # client audio chunks waiting for the VAD
    turn_queue_size: int = 8  # user turns waiting for the model


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
    if kind == "espeak":
        return EspeakSynthesizer()
    return load_synthesizer()


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
