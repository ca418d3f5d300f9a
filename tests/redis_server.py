"""A throwaway redis-server on 127.0.0.1 from the Debian package, for the session store tests.

Named redis_server, not redis: pytest puts tests/ first on sys.path, where a redis.py would hide
the redis client package. Nothing is persisted (`--save ''`, no append-only file); the working
directory and the log live in one temporary directory, removed on stop.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

START_TIMEOUT_S = 15


@contextmanager
def redis_server(port: int) -> Iterator[str]:
    """A running server; yields its redis:// URL (database 0)."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server is not installed: run scripts/system-deps.sh dev")
    root = Path(tempfile.mkdtemp(prefix="flashlive-redis-"))
    log = root / "redis.log"
    command = [binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(root),
               "--save", "", "--appendonly", "no", "--daemonize", "no"]  # fmt: skip
    try:
        with log.open("wb") as out:
            process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
        try:
            _wait_for_pong(process, port, log)
            yield f"redis://127.0.0.1:{port}/0"
        finally:
            process.kill()
            process.wait(timeout=10)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _wait_for_pong(process: subprocess.Popen[bytes], port: int, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"redis-server exited with {process.returncode}:\n{_tail(log)}")
        if _pong(port):
            return
        time.sleep(0.05)
    raise RuntimeError(f"redis-server did not answer PING in {START_TIMEOUT_S} s:\n{_tail(log)}")


def _pong(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as conn:
            conn.sendall(b"PING\r\n")
            return conn.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def _tail(log: Path) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-20:])
