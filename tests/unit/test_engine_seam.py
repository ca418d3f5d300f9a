"""The llama.cpp worker of the process: the native vision model describes on it, in turn with
the text engines."""

from __future__ import annotations

import io
import threading
from typing import Any

from PIL import Image

from flashlive.engine.worker import on_worker, run_on_worker, shared_worker
from flashlive.perception.vision import NativeVision


class ThreadNotingModel:
    def __init__(self) -> None:
        self.threads: list[str] = []

    def create_chat_completion(
        self, *, messages: Any, max_tokens: int, temperature: float
    ) -> dict[str, Any]:
        self.threads.append(threading.current_thread().name)
        assert on_worker()
        return {"choices": [{"message": {"content": "a grey square"}}]}


def test_the_worker_is_one_thread_shared_by_the_process() -> None:
    assert shared_worker() is shared_worker()
    names = {run_on_worker(lambda: threading.current_thread().name) for _ in range(5)}
    assert len(names) == 1 and names.pop().startswith("llama")
    assert not on_worker()


def test_work_already_on_the_worker_runs_at_once_instead_of_waiting_for_itself() -> None:
    def nested() -> str:
        return run_on_worker(lambda: threading.current_thread().name)

    assert run_on_worker(nested).startswith("llama")  # would deadlock if it queued


def test_native_vision_describes_on_the_engine_worker() -> None:
    model = ThreadNotingModel()
    vision = NativeVision(model)
    png = io.BytesIO()
    Image.new("RGB", (32, 32), "grey").save(png, "PNG")
    seen = vision.observe(png.getvalue(), "image/png")
    assert seen.text == "a grey square"
    worker = run_on_worker(lambda: threading.current_thread().name)
    assert model.threads == [worker]
