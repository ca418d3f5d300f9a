"""The engine interface: tokenize, count, stream tokens, cancel, and prefix state.

An engine turns a token sequence into a stream of text pieces. Everything above it
(prompt assembly, stop sequences, tool calls, the wire format) lives in `generation/`.
"""

from __future__ import annotations

import threading
from collections.abc import AsyncGenerator, Callable, Sequence
from dataclasses import dataclass
from enum import Enum, IntEnum
from typing import Protocol


class FinishCause(Enum):
    END_OF_TURN = "end_of_turn"  # the model emitted an end-of-generation token
    LENGTH = "length"  # max_tokens or the context window was reached
    CANCELLED = "cancelled"


class Priority(IntEnum):
    """Who waits for a generation, most urgent first: the engine serves a lower value first."""

    LIVE = 0  # a Live turn: a person is listening
    PRIORITY = 1  # serviceTier PRIORITY
    STANDARD = 2  # a REST request (serviceTier STANDARD, or none)
    FLEX = 3  # serviceTier FLEX: cheaper, may wait
    BACKGROUND = 4  # warming and other speculative work: yields to everything


@dataclass(frozen=True)
class EngineStats:
    """What /metrics reports of an engine's slots and steps (counters grow for its life)."""

    slots: int = 1
    slots_busy: int = 0
    resident: int = 0  # sequences whose state the engine holds, busy or idle
    kv_used: int = 0  # KV cells those sequences hold
    kv_size: int = 0
    steps: int = 0  # decode steps run
    step_tokens: int = 0  # tokens those steps carried in all
    step_sequences: int = 0  # sequences those steps carried in all (the batch sizes summed)
    evicted: int = 0  # idle sequences evicted to make room
    evicted_bytes: int = 0  # the states handed out as they were evicted
    restored_bytes: int = 0  # saved states loaded back into the engine
    # Per priority class name: (requests admitted, seconds they waited in all).
    waits: tuple[tuple[str, int, float], ...] = ()


@dataclass(frozen=True)
class SamplingParams:
    temperature: float = 1.0
    top_p: float = 0.95
    top_k: int = 64
    max_tokens: int = 512
    seed: int | None = None
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    grammar: str | None = None  # GBNF (checked with `check_grammar`); sampled tokens fit it


@dataclass(frozen=True)
class TokenPiece:
    """One step of a stream: the text it completed (may be empty mid-character) and its cause.

    The last piece of every stream carries `finish`; earlier pieces carry None.
    """

    text: str
    token_id: int | None
    finish: FinishCause | None = None


@dataclass(frozen=True)
class EngineInfo:
    name: str
    context_size: int
    chat_template: str | None
    bos_token: str
    eos_token: str
    # Texts of the tokens only a chat template may write (e.g. "<|im_start|>").
    control_tokens: frozenset[str] = frozenset()


class CancelToken:
    """Set from any thread; the generating thread checks it between tokens."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def cancel(self) -> None:
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()


@dataclass(frozen=True)
class PrefixState:
    """The engine's computed state for a token prefix, to be restored instead of recomputed."""

    model: str
    tokens: tuple[int, ...]
    data: bytes

    @property
    def nbytes(self) -> int:
        return len(self.data) + 4 * len(self.tokens)


class Engine(Protocol):
    @property
    def info(self) -> EngineInfo: ...

    @property
    def queued(self) -> int:
        """Generations waiting for the engine (what /metrics reports)."""
        ...

    @property
    def active(self) -> int:
        """Generations running right now."""
        ...

    def tokenize(self, text: str) -> list[int]:
        """Tokens of `text` exactly as `stream` will see it (special tokens parsed, BOS added)."""
        ...

    def count_tokens(self, text: str) -> int: ...

    def check_grammar(self, grammar: str) -> bool:
        """Whether the engine parses `grammar`; one it does not must never reach `stream`."""
        ...

    @property
    def stats(self) -> EngineStats: ...

    def stream(
        self,
        prompt: Sequence[int],
        params: SamplingParams,
        cancel: CancelToken | None = None,
        prefix: PrefixState | None = None,
        priority: Priority = Priority.STANDARD,
        keep: Callable[[PrefixState], None] | None = None,
    ) -> AsyncGenerator[TokenPiece, None]:
        """Generate after `prompt`. Closing the iterator early cancels the generation.

        Implementations reuse whatever prefix of `prompt` they still hold state for,
        so a conversation that grows by appending pays only for the new tokens. A `prefix`
        state whose tokens begin `prompt` is restored first when it covers more than that.
        Generations of a lower `priority` value are served first. With `keep`, the sequence
        is retained once the generation ends (as `retain` does, with no gap between the two).
        """
        ...

    async def snapshot(self, tokens: Sequence[int]) -> PrefixState:
        """The state after exactly `tokens`, computed now if need be."""
        ...

    def resident(self, tokens: Sequence[int]) -> int:
        """How many leading tokens of `tokens` the engine holds state for right now."""
        ...

    def retain(self, tokens: Sequence[int], on_evict: Callable[[PrefixState], None]) -> bool:
        """Keep the held sequence that begins with `tokens` and, should it be evicted to make
        room, hand its state to `on_evict` first (called on the engine's thread). False when no
        held sequence begins with them."""
        ...

    async def warm(self, prefix: Sequence[int]) -> bool:
        """Compute the state of `prefix` ahead of a request that will start with it.

        Only when the engine is otherwise idle: warming never delays a real request. Returns
        whether it ran.
        """
        ...

    async def aclose(self) -> None: ...


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    """How many leading tokens two sequences share."""
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n
