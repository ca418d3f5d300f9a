"""A flashlive server process for benchmarks: a free loopback port, its own data dir, a log."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

START_TIMEOUT_S = 300.0  # the first start may assemble the 1.1 GB instruct model
LIVE_PATH = "/ws/google.ai.generativelanguage.v1beta.GenerativeService.BidiGenerateContent"


@dataclass(frozen=True)
class BenchServer:
    port: int
    log_path: Path
    pid: int  # the server process: its memory is what the soak benchmark watches

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}{LIVE_PATH}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def flashlive_server(model: str, tmp: Path, *flags: str) -> Iterator[BenchServer]:
    """Start `flashlive serve` (plain HTTP only), wait for /healthz, always stop it."""
    port, log_path = free_port(), tmp / "server.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLASHLIVE_")}
    command = [
        sys.executable, "-m", "flashlive.cli", "serve", "--host", "127.0.0.1",
        "--port", str(port), "--tls-port", "0", "--model", model,
        "--data-dir", str(tmp / "data"), *flags,
    ]  # fmt: skip
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
    server = BenchServer(port, log_path, process.pid)
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"server did not start:\n{server.log()}")
            try:
                if httpx.get(f"{server.base_url}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)


def memory(pid: int) -> tuple[int, int]:
    """VmRSS and RssAnon of a process, in bytes."""
    found = {"VmRSS": 0, "RssAnon": 0}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in found:
            found[key] = int(value.split()[0]) * 1024  # reported in kB
    return found["VmRSS"], found["RssAnon"]
