"""One worker thread shared by many clients, served round-robin.

Whisper and Piper each use every core they are given, so two calls at once only slow each other
down: one thread runs them one after another. A plain FIFO would let a chatty session starve the
others, so each client has its own queue and the thread takes one job from each client in turn.

Jobs submitted with `run_batched` and the same batch function are taken together, one per client
in turn order, up to `max_batch`: when eight sessions stop talking at once, Whisper decodes their
eight utterances in one batch instead of making the last one wait for seven others.
"""

from __future__ import annotations

import asyncio
import contextvars
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, TypeVar

from flashlive.errors import ResourceExhausted, Unavailable

T = TypeVar("T")


BatchFn = Callable[[list[Any]], list[Any]]


@dataclass(eq=False)
class _Job:
    client: str
    fn: Callable[[], Any] | None  # a job of its own, or
    item: Any = None  # one item of a batch for `batch`
    batch: BatchFn | None = None
    future: Future[Any] = field(default_factory=Future)
    # The submitter's context: the job's log lines carry its request or session id (logs.py).
    context: contextvars.Context = field(default_factory=contextvars.copy_context)


class FairWorker:
    """Runs blocking callables on one thread; clients take turns, each in FIFO order."""

    def __init__(
        self, name: str, *, max_pending: int = 64, max_per_client: int = 8, max_batch: int = 1
    ) -> None:
        if max_pending < 1 or max_per_client < 1 or max_batch < 1:
            raise ValueError("max_pending, max_per_client and max_batch must be at least 1")
        self.name = name
        self._max_batch = max_batch
        self._max_pending = max_pending
        self._max_per_client = max_per_client
        # Insertion order is the turn order: a served client moves to the back.
        self._queues: dict[str, deque[_Job]] = {}
        self._pending = 0
        self._running = False
        self._closed = False
        self._wake = threading.Condition()
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)
        self._thread.start()

    @property
    def pending(self) -> int:
        """Jobs queued and not yet started."""
        with self._wake:
            return self._pending

    @property
    def idle(self) -> bool:
        """Nothing running and nothing queued: optional work may go ahead without delaying any."""
        with self._wake:
            return self._pending == 0 and not self._running

    async def run(self, client: str, fn: Callable[[], T]) -> T:
        """Runs `fn` on the worker thread when `client`'s turn comes; returns its result.

        Cancelling the caller before the job starts removes the job, so no compute is wasted; once
        started, the job finishes and its result is discarded.
        """
        return await self._await(self._submit(_Job(client, fn)))  # type: ignore[no-any-return]

    async def run_batched(self, client: str, item: Any, batch: BatchFn) -> Any:
        """Like `run`, for `batch([item])[0]`; queued items for the same `batch` run together."""
        return await self._await(self._submit(_Job(client, None, item, batch)))

    async def _await(self, job: _Job) -> Any:
        try:
            return await asyncio.wrap_future(job.future)
        except asyncio.CancelledError:
            self._withdraw(job)
            raise

    def close(self) -> None:
        """Refuses new jobs, cancels queued ones, and waits for the running one to finish."""
        with self._wake:
            self._closed = True
            dropped = [job for queue in self._queues.values() for job in queue]
            self._queues.clear()
            self._pending = 0
            self._wake.notify_all()
        for job in dropped:
            job.future.cancel()
        if threading.current_thread() is not self._thread:
            self._thread.join()

    def _submit(self, job: _Job) -> _Job:
        client = job.client
        with self._wake:
            if self._closed:
                raise Unavailable(f"The {self.name} worker is shut down.")
            queue = self._queues.get(client)
            if queue is not None and len(queue) >= self._max_per_client:
                raise ResourceExhausted(
                    f"Too many {self.name} requests queued for this session "
                    f"(limit {self._max_per_client}); wait for earlier ones to finish."
                )
            if self._pending >= self._max_pending:
                raise ResourceExhausted(
                    f"The {self.name} worker is overloaded ({self._pending} requests queued); "
                    "retry later."
                )
            self._queues.setdefault(client, deque()).append(job)
            self._pending += 1
            self._wake.notify()
        return job

    def _withdraw(self, job: _Job) -> None:
        with self._wake:
            queue = self._queues.get(job.client)
            if queue is None or job not in queue:
                return  # already started (or finished): nothing to take back
            queue.remove(job)
            self._pending -= 1
            if not queue:
                del self._queues[job.client]

    def _next(self) -> list[_Job] | None:
        with self._wake:
            while not self._queues and not self._closed:
                self._wake.wait()
            if self._closed:
                return None
            jobs = [self._pop(next(iter(self._queues)))]
            batch = jobs[0].batch
            if batch is not None:
                for client in list(self._queues):
                    if len(jobs) == self._max_batch:
                        break
                    taken = any(job.client == client for job in jobs)
                    if not taken and self._queues[client][0].batch is batch:
                        jobs.append(self._pop(client))
            self._running = True
            return jobs

    def _pop(self, client: str) -> _Job:
        """The client's next job; the client moves to the back of the turn order."""
        queue = self._queues.pop(client)
        job = queue.popleft()
        if queue:
            self._queues[client] = queue
        self._pending -= 1
        return job

    def _serve(self) -> None:
        while (jobs := self._next()) is not None:
            try:
                live = [job for job in jobs if job.future.set_running_or_notify_cancel()]
                if live:
                    self._execute(live)
            finally:
                with self._wake:
                    self._running = False

    @staticmethod
    def _execute(jobs: list[_Job]) -> None:
        try:
            first = jobs[0]
            if first.batch is not None:  # in the first job's context: one id on its lines
                results = first.context.run(first.batch, [job.item for job in jobs])
            else:
                assert first.fn is not None
                results = [first.context.run(first.fn)]
        except BaseException as exc:  # the callers decide what the failure means
            for job in jobs:
                job.future.set_exception(exc)
        else:
            for job, result in zip(jobs, results, strict=True):
                job.future.set_result(result)
