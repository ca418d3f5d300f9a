import asyncio
import threading
from collections.abc import Iterator

import pytest

from flashlive.errors import ResourceExhausted, Unavailable
from flashlive.perception.worker import FairWorker


@pytest.fixture
def worker() -> Iterator[FairWorker]:
    w = FairWorker("test", max_pending=8, max_per_client=4)
    yield w
    w.close()


async def block(worker: FairWorker) -> tuple[threading.Event, asyncio.Task[None]]:
    """Occupies the worker thread until the returned event is set."""
    started, release = threading.Event(), threading.Event()

    def hold() -> None:
        started.set()
        release.wait(5)

    task = asyncio.create_task(worker.run("blocker", hold))
    await asyncio.to_thread(started.wait, 5)
    return release, task


async def test_returns_results_and_raises_errors(worker: FairWorker) -> None:
    assert await worker.run("a", lambda: 41 + 1) == 42
    with pytest.raises(ZeroDivisionError):
        await worker.run("a", lambda: 1 // 0)


async def test_clients_are_served_round_robin(worker: FairWorker) -> None:
    release, blocker = await block(worker)
    order: list[str] = []
    jobs = [("a", 1), ("a", 2), ("a", 3), ("b", 1), ("b", 2), ("c", 1)]
    tasks = []
    for client, n in jobs:
        tasks.append(
            asyncio.create_task(worker.run(client, lambda t=f"{client}{n}": order.append(t)))
        )
        await asyncio.sleep(0)  # submit in this order
    await asyncio.sleep(0.01)
    assert worker.pending == len(jobs)
    release.set()
    await asyncio.gather(blocker, *tasks)
    assert order == ["a1", "b1", "c1", "a2", "b2", "a3"]
    assert worker.pending == 0


async def test_a_job_cancelled_before_it_starts_never_runs(worker: FairWorker) -> None:
    release, blocker = await block(worker)
    ran: list[str] = []
    doomed = asyncio.create_task(worker.run("a", lambda: ran.append("doomed")))
    kept = asyncio.create_task(worker.run("a", lambda: ran.append("kept")))
    await asyncio.sleep(0.01)
    doomed.cancel()
    with pytest.raises(asyncio.CancelledError):
        await doomed
    assert worker.pending == 1
    release.set()
    await asyncio.gather(blocker, kept)
    assert ran == ["kept"]


async def test_a_running_job_finishes_even_if_its_caller_leaves(worker: FairWorker) -> None:
    release, blocker = await block(worker)
    blocker.cancel()
    with pytest.raises(asyncio.CancelledError):
        await blocker
    release.set()
    assert await worker.run("a", lambda: "next") == "next"


async def test_per_client_and_total_limits(worker: FairWorker) -> None:
    release, blocker = await block(worker)
    tasks = [asyncio.create_task(worker.run("greedy", lambda: None)) for _ in range(4)]
    await asyncio.sleep(0.01)
    with pytest.raises(ResourceExhausted, match="session"):
        await worker.run("greedy", lambda: None)
    tasks += [asyncio.create_task(worker.run(f"c{i}", lambda: None)) for i in range(4)]
    await asyncio.sleep(0.01)
    assert worker.pending == 8
    with pytest.raises(ResourceExhausted, match="overloaded"):
        await worker.run("another", lambda: None)
    release.set()
    await asyncio.gather(blocker, *tasks)


async def test_close_cancels_queued_jobs_and_refuses_new_ones() -> None:
    worker = FairWorker("test")
    release, blocker = await block(worker)
    queued = asyncio.create_task(worker.run("a", lambda: None))
    await asyncio.sleep(0.01)
    closing = asyncio.create_task(asyncio.to_thread(worker.close))
    await asyncio.sleep(0.01)
    release.set()
    await closing
    await blocker
    with pytest.raises(asyncio.CancelledError):
        await queued
    with pytest.raises(Unavailable):
        await worker.run("a", lambda: None)


def test_limits_must_be_positive() -> None:
    with pytest.raises(ValueError):
        FairWorker("test", max_pending=0)


async def test_batched_jobs_run_together_one_per_client() -> None:
    worker = FairWorker("batch", max_pending=16, max_per_client=4, max_batch=3)
    try:
        release, blocker = await block(worker)
        batches: list[list[str]] = []

        def batch(items: list[str]) -> list[str]:
            batches.append(items)
            return [item.upper() for item in items]

        submitted = [("a", "a1"), ("a", "a2"), ("b", "b1"), ("c", "c1"), ("d", "d1")]
        tasks = [asyncio.create_task(worker.run_batched(c, i, batch)) for c, i in submitted]
        await asyncio.sleep(0.05)
        assert worker.pending == 5 and not worker.idle
        release.set()
        await blocker
        results = await asyncio.gather(*tasks)
        assert results == ["A1", "A2", "B1", "C1", "D1"]
        # At most three per batch, never two of one client in a batch, turn order kept.
        assert batches == [["a1", "b1", "c1"], ["d1", "a2"]]
        assert worker.idle
    finally:
        worker.close()


async def test_a_batch_failure_reaches_every_caller_in_it() -> None:
    worker = FairWorker("batch", max_batch=4)
    try:

        def broken(items: list[int]) -> list[int]:
            raise RuntimeError("model crashed")

        release, blocker = await block(worker)
        tasks = [asyncio.create_task(worker.run_batched(str(i), i, broken)) for i in range(3)]
        await asyncio.sleep(0.05)
        release.set()
        await blocker
        outcomes = await asyncio.gather(*tasks, return_exceptions=True)
        assert all(isinstance(o, RuntimeError) for o in outcomes)
    finally:
        worker.close()
