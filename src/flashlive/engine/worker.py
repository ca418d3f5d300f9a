"""The one thread every llama.cpp call of this process runs on.

llama.cpp's own threads use every core during a decode; two models decoding at once (the text
model and a multimodal describer) would only fight over them. So the engines of a process and
the native vision model take turns on one worker thread, in arrival order.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from flashlive.logs import in_context

T = TypeVar("T")

_lock = threading.Lock()
_worker: ThreadPoolExecutor | None = None
_worker_thread = threading.local()


def _mark() -> None:
    _worker_thread.on_worker = True


def shared_worker() -> ThreadPoolExecutor:
    """The process's llama.cpp worker, started on first use and kept for the process's life."""
    global _worker
    with _lock:
        if _worker is None:
            _worker = ThreadPoolExecutor(
                max_workers=1, thread_name_prefix="llama", initializer=_mark
            )
        return _worker


def on_worker() -> bool:
    return bool(getattr(_worker_thread, "on_worker", False))


def run_on_worker(fn: Callable[[], T], worker: ThreadPoolExecutor | None = None) -> T:
    """Run `fn` on the worker and wait for it (blocking: call from a thread, not the loop).

    Already on the worker, `fn` runs at once: waiting for itself would never end. The worker's
    queue has no maxsize, yet it is bounded: each caller waits here for its one job, so there
    are never more of these jobs than threads calling (asyncio's default pool, a few dozen);
    generations are bounded by the engine (`max_queued`, refused beyond it).
    """
    if on_worker():
        return fn()
    return (worker or shared_worker()).submit(in_context(fn)).result()  # its lines keep the ids
