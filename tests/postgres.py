"""A throwaway PostgreSQL cluster on 127.0.0.1 from the Debian packages, for the ledger tests.

Root cannot run postgres, so as root the cluster is owned by and run as the `postgres` system
user the Debian package creates. Everything lives in one temporary directory, removed on stop.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

START_TIMEOUT_S = 30


def pg_bin() -> Path | None:
    """The newest installed server's bin directory, or None."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=_major)
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def _major(path: str) -> int:
    version = Path(path).parent.parent.name
    return int(version) if version.isdigit() else 0


def _as_owner(command: list[str]) -> list[str]:
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--", *command]
    return command


@contextmanager
def postgres_cluster(port: int) -> Iterator[str]:
    """A running cluster with a `ledger` database; yields its postgresql:// URL."""
    bin_dir = pg_bin()
    if bin_dir is None:
        raise RuntimeError("PostgreSQL is not installed: run scripts/system-deps.sh dev")
    root = Path(tempfile.mkdtemp(prefix="flashlive-pg-"))
    if os.geteuid() == 0:
        shutil.chown(root, "postgres", "postgres")
    data, log = root / "data", root / "log"
    try:
        run(
            [
                str(bin_dir / "initdb"),
                "-D",
                str(data),
                "-A",
                "trust",
                "-U",
                "postgres",
                "-E",
                "UTF8",
            ]
        )
        options = f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off"
        run([str(bin_dir / "pg_ctl"), "start", "-D", str(data), "-l", str(log), "-w",
             "-t", str(START_TIMEOUT_S), "-o", options])  # fmt: skip
        try:
            run([str(bin_dir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres",
                 "ledger"])  # fmt: skip
            yield f"postgresql://postgres@127.0.0.1:{port}/ledger"
        finally:
            run([str(bin_dir / "pg_ctl"), "stop", "-D", str(data), "-m", "immediate", "-w",
                 "-t", str(START_TIMEOUT_S)])  # fmt: skip
    finally:
        shutil.rmtree(root, ignore_errors=True)


def run(command: list[str]) -> None:
    subprocess.run(
        _as_owner(command), check=True, capture_output=True, timeout=START_TIMEOUT_S + 10
    )
