"""The engine's sequences in its one KV cache: which tokens each holds, which to run a job in,
which to evict.

Plain bookkeeping, no llama.cpp: the engine asks where a prompt should run and what must go to
make room, then does the KV operations itself. A sequence that finished its job stays resident
(idle) with its tokens, so the next prompt that begins the same way (a Live session's next
turn, a request sharing a long system prompt) computes only what is new.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from flashlive.engine.base import PrefixState, common_prefix

# A resident sequence that a prompt shares all but this many of its tokens with is that
# prompt's own conversation going on (the chat template writes the end of the last answer a
# little differently than it was generated): the prompt runs in it, trimming that tail.
CONTINUATION_TAIL = 16


@dataclass(eq=False)
class Slot:
    seq_id: int
    tokens: list[int] = field(default_factory=list)  # tokens whose KV this sequence holds
    busy: bool = False
    last_used: int = 0  # the step it was last released at (least recently used goes first)
    # Set by `retain`: called with the sequence's state before it is evicted.
    on_evict: Callable[[PrefixState], None] | None = None


@dataclass(frozen=True)
class Placement:
    """Where a prompt runs: in `target`, after copying `shared` tokens from `source`."""

    target: Slot
    source: Slot | None  # None: the target itself holds the shared tokens (or none are shared)
    shared: int


class Slots:
    def __init__(self, count: int, kv_size: int) -> None:
        self.all = [Slot(seq_id) for seq_id in range(count)]
        self.kv_size = kv_size

    @property
    def used(self) -> int:
        """KV cells held (a prefix copied into two sequences is counted twice: an upper bound)."""
        return sum(len(slot.tokens) for slot in self.all)

    @property
    def free(self) -> int:
        return self.kv_size - self.used

    @property
    def busy(self) -> int:
        return sum(slot.busy for slot in self.all)

    @property
    def resident(self) -> int:
        return sum(bool(slot.tokens) or slot.busy for slot in self.all)

    def longest(self, tokens: Sequence[int]) -> tuple[Slot | None, int]:
        """The sequence sharing the longest prefix with `tokens`, busy or idle, and its length."""
        best: Slot | None = None
        shared = 0
        for slot in self.all:
            n = common_prefix(slot.tokens, tokens)
            if n > shared:
                best, shared = slot, n
        return best, shared

    def place(self, tokens: Sequence[int], *, reuse: bool = True) -> Placement | None:
        """Where a job for `tokens` runs (None: every sequence is busy).

        Its own conversation's sequence when one is idle; else an empty sequence, else the least
        recently used idle one, with the longest shared prefix copied from wherever it is held
        (copying a prefix within the cache costs no compute). `reuse=False`: from nothing.
        """
        idle = [slot for slot in self.all if not slot.busy]
        if not idle:
            return None
        if reuse:
            going_on = [
                (n, slot)
                for slot in idle
                if (n := common_prefix(slot.tokens, tokens)) > 0
                and n >= len(slot.tokens) - CONTINUATION_TAIL
            ]
            if going_on:
                n, slot = max(going_on, key=lambda pair: pair[0])
                return Placement(slot, None, n)
        target = min(idle, key=lambda slot: (bool(slot.tokens), slot.last_used))
        if not reuse:
            return Placement(target, None, 0)
        source, shared = self.longest(tokens)
        if source is target:
            return Placement(target, None, shared)
        return Placement(target, source, shared)

    def victims(self, need: int, spare: Sequence[Slot]) -> list[Slot]:
        """Idle sequences to evict, least recently used first, until `need` cells are free
        (all of them if even that is not enough); never those in `spare`."""
        out: list[Slot] = []
        free = self.free
        order = sorted(
            (slot for slot in self.all if not slot.busy and slot.tokens and slot not in spare),
            key=lambda slot: slot.last_used,
        )
        for slot in order:
            if free >= need:
                break
            out.append(slot)
            free += len(slot.tokens)
        return out
