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
