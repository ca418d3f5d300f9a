"""Log lines carry the request or session they serve, on worker threads too; JSON on demand."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import threading

import pytest

from flashlive import logs
from flashlive.perception.worker import FairWorker


@pytest.fixture
def captured() -> tuple[logging.Logger, io.StringIO, logging.Handler]:
    out = io.StringIO()
    handler = logs.handler("text")
    handler.stream = out  # type: ignore[attr-defined]
    logger = logging.getLogger("flashlive.test-logs")
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    logger.propagate = False
    return logger, out, handler


def test_a_line_names_its_request_and_session(
    captured: tuple[logging.Logger, io.StringIO, logging.Handler],
) -> None:
    logger, out, _ = captured
    logger.info("outside")
    with logs.serving(session="s1"):
        with logs.serving(request="r1"):
            logger.info("inside both")
        logger.info("after the request")
    assert out.getvalue().splitlines() == [
        "INFO flashlive.test-logs: outside",
        "INFO flashlive.test-logs [session s1, request r1]: inside both",
        "INFO flashlive.test-logs [session s1]: after the request",
    ]


def test_json_lines_are_objects_with_the_ids(
    captured: tuple[logging.Logger, io.StringIO, logging.Handler],
) -> None:
    logger, out, handler = captured
    handler.setFormatter(logs.JsonFormatter())
    with logs.serving(request="r2"):
        try:
            raise ValueError("boom")
        except ValueError:
            logger.exception("it failed: %s", "badly")
    line = json.loads(out.getvalue())
    assert line["message"] == "it failed: badly" and line["level"] == "ERROR"
    assert line["request_id"] == "r2" and "session_id" not in line
    assert "ValueError: boom" in line["exception"] and line["time"].endswith("Z")


def test_a_worker_thread_runs_each_job_in_its_submitters_context() -> None:
    worker = FairWorker("test", max_batch=1)

    async def submit(request: str) -> tuple[str | None, str]:
        with logs.serving(request=request, caller=f"key-{request}"):
            return await worker.run(
                request, lambda: (logs.current_caller("none"), threading.current_thread().name)
            )

    async def main() -> list[tuple[str | None, str]]:
        return await asyncio.gather(submit("a"), submit("b"))

    try:
        seen = asyncio.run(main())
    finally:
        worker.close()
    assert seen == [("key-a", "test"), ("key-b", "test")]


def test_in_context_carries_the_ids_to_a_plain_thread() -> None:
    found: list[str] = []
    with logs.serving(session="s3"):
        job = logs.in_context(logs.current_caller, "none")
    thread = threading.Thread(target=lambda: found.append(job()))
    thread.start()
    thread.join()
    assert found == ["s3"] and logs.current_caller("none") == "none"
