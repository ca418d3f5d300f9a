"""The official JavaScript SDK (@google/genai) against the REST and Live APIs of a real server."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from conftest import FAST_MODEL, Server, missing_dependency

JS_DIR = Path(__file__).resolve().parents[1] / "js"
SCRIPT = JS_DIR / "rest_sdk.mjs"
LIVE_SCRIPT = JS_DIR / "live_sdk.mjs"
SDK_DIR = JS_DIR / "node_modules" / "@google" / "genai"
NODE = shutil.which("node")
RUN_TIMEOUT_S = 120


@pytest.fixture(autouse=True)
def node_and_sdk() -> None:
    if NODE is None:
        missing_dependency("node is not on PATH (scripts/system-deps.sh dev installs it)")
    if not SDK_DIR.is_dir():
        missing_dependency(f"@google/genai is not installed: run `npm install --prefix {JS_DIR}`")


def run_script(script: Path, server: Server) -> dict[str, Any]:
    """Runs an SDK script against the server and returns the JSON line it printed."""
    assert NODE is not None
    env = {**os.environ, "FLASHLIVE_BASE_URL": server.base_url, "FLASHLIVE_MODEL": FAST_MODEL}
    result = subprocess.run(
        [NODE, str(script)],
        capture_output=True,
        text=True,
        env=env,
        timeout=RUN_TIMEOUT_S,
        check=False,
    )
    if result.returncode != 0:
        pytest.fail(
            f"{script.name} exited with {result.returncode}\n"
            f"stderr:\n{result.stderr}\nstdout:\n{result.stdout}\nserver log:\n{server.log()}"
        )
    lines = [line for line in result.stdout.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one JSON line on stdout, got:\n{result.stdout}"
    parsed = json.loads(lines[0])
    assert isinstance(parsed, dict)
    return parsed


@pytest.fixture(scope="module")
def report(server: Server) -> dict[str, Any]:
    return run_script(SCRIPT, server)


@pytest.fixture(scope="module")
def live_report(server: Server) -> dict[str, Any]:
    return run_script(LIVE_SCRIPT, server)


def check_usage(usage: dict[str, Any]) -> None:
    prompt = usage["promptTokenCount"]
    candidates = usage["candidatesTokenCount"]
    assert prompt > 0
    assert candidates >= 1
    assert usage["totalTokenCount"] == prompt + candidates


def test_generate_content(report: dict[str, Any]) -> None:
    generate = report["generate"]
    assert generate["text"].strip()
    assert "paris" in generate["text"].lower()
    assert generate["finishReason"] in {"STOP", "MAX_TOKENS"}
    check_usage(generate["usage"])


def test_generate_content_stream(report: dict[str, Any]) -> None:
    stream = report["stream"]
    chunks: list[str] = stream["chunks"]
    assert len(chunks) >= 2
    assert "".join(chunks).strip()
    # Only the final chunk closes the candidate; the ones before it carry text only.
    assert all(reason is None for reason in stream["finishReasons"][:-1])
    assert stream["finishReason"] in {"STOP", "MAX_TOKENS"}
    assert stream["finishReasons"][-1] == stream["finishReason"]
    check_usage(stream["usage"])


def test_unknown_model_is_not_found(report: dict[str, Any]) -> None:
    not_found = report["notFound"]
    assert not_found["status"] == 404
    assert "no-such-model" in not_found["message"]
    assert "NOT_FOUND" in not_found["message"]


def test_live_conversation(live_report: dict[str, Any]) -> None:
    conversation = live_report["conversation"]
    assert conversation["setupComplete"] is True
    first, second = conversation["turns"]
    # sendClientContent, then sendRealtimeInput({text}): each turn ends with turnComplete.
    assert first["turnComplete"] is True
    assert second["turnComplete"] is True
    assert "paris" in first["text"].lower()
    assert second["text"].strip()
    for turn in (first, second):
        assert turn["hasTotalTokenCount"] is True
        usage = turn["usage"]
        assert usage["totalTokenCount"] > 0
        assert usage["totalTokenCount"] == usage["promptTokenCount"] + usage["responseTokenCount"]
    # The second turn is answered with the first one in its context.
    assert second["usage"]["promptTokenCount"] > first["usage"]["promptTokenCount"]


def test_live_unknown_model_closes_with_policy_code(live_report: dict[str, Any]) -> None:
    unknown = live_report["unknownModel"]
    assert unknown["code"] == 1008
    assert "no-such-model" in unknown["reason"]
    # The session never became usable: `connect` waits for a setupComplete that never came.
    assert unknown["connect"] == "pending"
