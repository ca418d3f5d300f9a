"""The jobs waiting for the engine, and the order they get its sequences in.

Lower priority values first (a Live turn before a REST request before FLEX before warming);
within a class, the caller (API key) admitted least so far, then arrival order: one key that
sends a hundred requests does not hold back another key's one.
"""

from __future__ import annotations

import contextvars
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from flashlive.engine.base import CancelToken, PrefixState, Priority, SamplingParams, TokenPiece

Emit = Callable[[TokenPiece | BaseException], None]


class Kind(Enum):
    GENERATE = "generate"  # sample after the tokens, stream the pieces
    WARM = "warm"  # compute the tokens' state, only while nothing else runs
    SNAPSHOT = "snapshot"  # compute the tokens' state and hand it out


@dataclass(eq=False)
class Job:
    kind: Kind
    tokens: list[int]  # what the sequence must hold before the next sample (grows as it samples)
    priority: Priority
    caller: str
    cancel: CancelToken
    params: SamplingParams = field(default_factory=SamplingParams)
    emit: Emit | None = None  # GENERATE: where pieces go
    done: Future[Any] | None = None  # WARM / SNAPSHOT: the result
    prefix: PrefixState | None = None
    context: contextvars.Context = field(default_factory=contextvars.copy_context)
    arrival: int = 0
    enqueued: float = field(default_factory=time.monotonic)
    budget: int = 0  # tokens it may still generate
    produced: int = 0
    fresh: bool = False  # start from nothing (or `prefix`): a seeded request replays exactly
    keep: Callable[[PrefixState], None] | None = None  # its sequence's keeper once it ends
    # Engine-side state once admitted (the slot, the sampler, the text decoder).
    slot: Any = None
    sampler: Any = None
    decoder: Any = None

    def log(self, fn: Callable[..., None], *args: Any) -> None:
        """A log line carrying the ids of the request or session this job is for."""
        self.context.run(fn, *args)


class Waiting:
    """Not thread-safe: the engine holds its lock around every call."""

    def __init__(self) -> None:
        self._jobs: list[Job] = []
        self._served: dict[str, int] = {}
        self._arrivals = 0

    def __len__(self) -> int:
        return len(self._jobs)

    def push(self, job: Job) -> None:
        self._arrivals += 1
        job.arrival = self._arrivals
        self._jobs.append(job)

    def requeue(self, job: Job) -> None:
        """A job that was running and was preempted: it keeps its place in arrival order."""
        self._jobs.append(job)

    def ordered(self) -> list[Job]:
        return sorted(
            self._jobs, key=lambda j: (j.priority, self._served.get(j.caller, 0), j.arrival)
        )

    def take(self, job: Job) -> None:
        self._jobs.remove(job)
        self._served[job.caller] = self._served.get(job.caller, 0) + 1
        if not self._jobs:
            self._served.clear()  # a quiet moment: nobody's past share counts any more

    def drain(self) -> list[Job]:
        jobs, self._jobs = self._jobs, []
        return jobs

    def urgent(self) -> bool:
        """Whether anything other than background work waits."""
        return any(job.priority < Priority.BACKGROUND for job in self._jobs)
