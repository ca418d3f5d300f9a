"""Shared fixtures: real flashlive server processes on 127.0.0.1, started and stopped."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import httpx
import pytest
from hypothesis import settings

# The suite runs in CI on every submission: property tests replay the same examples each run, so a
# failure there is reproducible; explore more with `--hypothesis-profile=explore`.
settings.register_profile("repeatable", derandomize=True, deadline=None)
settings.register_profile("explore", max_examples=5000, deadline=None)
settings.load_profile("repeatable")

FAST_MODEL = "gemma-3-270m"
INSTRUCT_MODEL = "qwen2.5-coder-1.5b-instruct"
START_TIMEOUT_S = 300  # the first start may assemble the 1.1 GB instruct model


def missing_dependency(reason: str) -> NoReturn:
    """A test's dependency is not installed: skip on a developer's machine, fail under CI (`CI`
    set, as .ci/run does), where a green run must not hide a missing install step."""
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI is set: a missing dependency fails the run)")
    pytest.skip(reason)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    port: int
    tls_port: int
    data_dir: Path
    log_path: Path

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def tls_url(self) -> str:
        return f"https://localhost:{self.tls_port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def start_server(
    tmp: Path,
    *,
    model: str = FAST_MODEL,
    env: dict[str, str] | None = None,
    args: tuple[str, ...] = (),
) -> Server:
    tmp.mkdir(parents=True, exist_ok=True)
    port, tls_port = free_port(), free_port()
    data_dir = tmp / "data"
    log_path = tmp / "server.log"
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("FLASHLIVE_")}
    full_env.update(env or {})
    command = [
        sys.executable, "-m", "flashlive.cli", "serve",
        "--host", "127.0.0.1", "--port", str(port), "--tls-port", str(tls_port),
        "--model", model, "--data-dir", str(data_dir), "--context-size", "4096",
        "--output-token-limit", "2048", *args,
    ]  # fmt: skip
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=full_env)
    server = Server(process, port, tls_port, data_dir, log_path)
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}:\n{server.log()}")
        try:
            if httpx.get(f"{server.base_url}/healthz", timeout=2).status_code == 200:
                return server
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    stop_server(server)
    raise RuntimeError(f"server did not become healthy:\n{server.log()}")


def stop_server(server: Server) -> None:
    server.process.terminate()
    try:
        server.process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        server.process.kill()
        server.process.wait(timeout=5)


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """An open server (no API keys) whose default model is the fast one; both models servable."""
    srv = start_server(tmp_path_factory.mktemp("server"))
    yield srv
    stop_server(srv)
