"""The usage ledger for real: PostgreSQL, the REST API through the SDK, and a kill -9."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from conftest import FAST_MODEL, Server, free_port, missing_dependency, start_server, stop_server
from google import genai
from google.genai import errors, types
from postgres import pg_bin, postgres_cluster

from flashlive.ledger import PostgresLedger, UsageRecord, hash_key, open_ledger

USER, LIMITED, ADMIN = "user-key", "limited-key", "admin-key"


# --- (a) the ledger contract against a real PostgreSQL -----------------------------------


@pytest.fixture(scope="module")
def pg_url() -> Iterator[str]:
    if pg_bin() is None:
        missing_dependency("PostgreSQL is not installed (scripts/system-deps.sh dev installs it)")
    with postgres_cluster(free_port()) as url:
        yield url


@pytest.fixture
async def pg(pg_url: str) -> AsyncIterator[PostgresLedger]:
    ledger = open_ledger(pg_url, Path("/nonexistent"))
    assert isinstance(ledger, PostgresLedger)
    yield ledger
    await ledger.close()


def rec(request_id: str, **fields: object) -> UsageRecord:
    values: dict[str, object] = {
        "time": datetime(2025, 3, 1, 12, tzinfo=UTC),
        "key_hash": "k1",
        "model": "gemma-3-270m",
        "method": "generateContent",
        "input_tokens": {"TEXT": 1000},
        "output_tokens": {"TEXT": 100},
    }
    values.update(fields)
    return UsageRecord(request_id=request_id, **values)  # type: ignore[arg-type]


async def test_postgres_records_and_groups(pg: PostgresLedger) -> None:
    day2 = datetime(2025, 3, 2, 1, tzinfo=UTC)
    await asyncio.gather(
        *(pg.record(rec(f"pg-a{i}")) for i in range(10)),
        pg.record(rec("pg-b", key_hash="k2", model="other", output_tokens={"AUDIO": 10})),
        pg.record(rec("pg-c", time=day2, input_tokens={"TEXT": 10, "AUDIO": 5}, cached_tokens=3)),
    )
    by_day = await pg.summary(by="day")
    assert [(r.group, r.requests, r.input_tokens, r.output_tokens) for r in by_day] == [
        ("2025-03-01", 11, 11000, 1010),
        ("2025-03-02", 1, 15, 100),
    ]
    assert [(r.group, r.requests) for r in await pg.summary(by="key")] == [("k1", 11), ("k2", 1)]
    by_model = {r.group: r for r in await pg.summary(by="model")}
    assert by_model["gemma-3-270m"].cached_tokens == 3
    assert by_model["gemma-3-270m"].cost_usd > 0
    recent = await pg.summary(key_hash="k1", since=day2 - timedelta(hours=2), by="model")
    assert [(r.group, r.requests) for r in recent] == [("gemma-3-270m", 1)]


async def test_postgres_counts_a_request_id_once(pg: PostgresLedger, pg_url: str) -> None:
    await asyncio.gather(*(pg.record(rec("pg-dup", key_hash="dup")) for _ in range(20)))
    other = open_ledger(pg_url, Path("/nonexistent"))  # a second process, as it were
    await other.record(rec("pg-dup", key_hash="dup", input_tokens={"TEXT": 1}))
    await other.close()
    rows = await pg.summary(key_hash="dup", by="key")
    assert [(r.requests, r.input_tokens) for r in rows] == [(1, 1000)]


# --- (b) REST end to end through the SDK ---------------------------------------------------


@pytest.fixture(scope="module")
def billed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("ledger-server")
    quota = tmp / "quota.toml"
    quota.write_text(f'[keys."{LIMITED}"]\nrequests_per_min = 2\n')
    env = {
        "FLASHLIVE_API_KEYS": f"{USER},{LIMITED}",
        "FLASHLIVE_ADMIN_KEYS": ADMIN,
        "FLASHLIVE_QUOTA_FILE": str(quota),
    }
    server = start_server(tmp, env=env)
    yield server
    stop_server(server)


def sdk(server: Server, key: str) -> genai.Client:
    return genai.Client(api_key=key, http_options=types.HttpOptions(base_url=server.base_url))


def usage(server: Server, key: str, **params: str) -> httpx.Response:
    return httpx.get(
        f"{server.base_url}/v1beta/usage", params=params, headers={"x-goog-api-key": key}
    )


def test_rest_calls_are_in_the_ledger_the_cli_and_the_endpoint(billed: Server) -> None:
    client = sdk(billed, USER)
    config = types.GenerateContentConfig(temperature=0, max_output_tokens=8)
    one = client.models.generate_content(model=FAST_MODEL, contents="Say hi.", config=config)
    chunks = list(
        client.models.generate_content_stream(
            model=FAST_MODEL, contents="Count: 1 2 3", config=config
        )
    )
    client.models.count_tokens(model=FAST_MODEL, contents="Say hi.")
    final = chunks[-1].usage_metadata
    assert one.usage_metadata is not None and final is not None
    prompt = (one.usage_metadata.prompt_token_count or 0) + (final.prompt_token_count or 0)
    output = (one.usage_metadata.candidates_token_count or 0) + (final.candidates_token_count or 0)

    answer = usage(billed, ADMIN, by="key", keyHash=hash_key(USER))
    assert answer.status_code == 200, answer.text
    [row] = answer.json()["rows"]
    assert row["group"] == hash_key(USER)
    assert (row["requests"], row["inputTokens"], row["outputTokens"]) == (3, prompt, output)
    assert row["costUsd"] > 0

    by_model = usage(billed, ADMIN, by="model").json()["rows"]
    assert FAST_MODEL in {r["group"] for r in by_model}

    printed = subprocess.run(
        [sys.executable, "-m", "flashlive.cli", "usage", "--by", "key", "--key", USER,
         "--data-dir", str(billed.data_dir)],
        check=True, capture_output=True, text=True, timeout=60,
    ).stdout  # fmt: skip
    line = next(x for x in printed.splitlines() if x.startswith(hash_key(USER)))
    assert line.split()[1:4] == ["3", str(prompt), str(output)]
    assert float(line.split()[-1]) == pytest.approx(row["costUsd"], abs=1e-6)

    records = _records(billed.data_dir / "ledger.sqlite3")
    assert one.response_id in records and chunks[-1].response_id in records


def test_usage_needs_an_admin_key(billed: Server) -> None:
    refused = usage(billed, USER)
    assert refused.status_code == 403
    assert refused.json()["error"]["status"] == "PERMISSION_DENIED"
    assert usage(billed, ADMIN, by="week").status_code == 400


def test_quota_exceeded_is_429_with_retry_after(billed: Server) -> None:
    client = sdk(billed, LIMITED)
    client.models.count_tokens(model=FAST_MODEL, contents="one")
    client.models.count_tokens(model=FAST_MODEL, contents="two")
    with pytest.raises(errors.ClientError) as refused:
        client.models.count_tokens(model=FAST_MODEL, contents="three")
    assert refused.value.code == 429
    raw = httpx.post(
        f"{billed.base_url}/v1beta/models/{FAST_MODEL}:countTokens",
        json={"contents": [{"parts": [{"text": "four"}]}]},
        headers={"x-goog-api-key": LIMITED},
    )
    assert raw.status_code == 429
    assert raw.json()["error"]["status"] == "RESOURCE_EXHAUSTED"
    assert 1 <= int(raw.headers["retry-after"]) <= 30
    metrics = httpx.get(f"{billed.base_url}/metrics", headers={"x-goog-api-key": ADMIN}).text
    assert f'flashlive_tokens_total{{direction="output",model="{FAST_MODEL}"}}' in metrics
    assert f'flashlive_cost_usd_total{{model="{FAST_MODEL}"}}' in metrics


def _records(path: Path) -> dict[str, int]:
    """request_id → how many rows carry it."""
    with sqlite3.connect(path) as conn:
        rows = conn.execute("SELECT request_id, COUNT(*) FROM usage_records GROUP BY 1")
        return {str(r): int(n) for r, n in rows}


# --- (c) durability under kill -9 ----------------------------------------------------------

CALLS = 30
KILL_AFTER = 10  # completed responses before the server is killed


def test_every_completed_response_survives_kill_9(tmp_path: Path) -> None:
    server = start_server(tmp_path, args=("--tls-port", "0"))
    client = sdk(server, "anyone")
    completed: list[str] = []
    lock = threading.Lock()
    enough = threading.Event()

    def call(i: int) -> None:
        config = types.GenerateContentConfig(max_output_tokens=12, seed=i)
        try:
            response = client.models.generate_content(
                model=FAST_MODEL, contents=f"Tell me about the number {i}.", config=config
            )
        except Exception:
            return  # cut off by the kill: it never completed, so nothing is promised
        with lock:
            completed.append(str(response.response_id))
            if len(completed) >= KILL_AFTER:
                enough.set()

    threads = [threading.Thread(target=call, args=(i,), daemon=True) for i in range(CALLS)]
    try:
        for thread in threads:
            thread.start()
        assert enough.wait(timeout=240), server.log()
        os.kill(server.process.pid, signal.SIGKILL)
        server.process.wait(timeout=10)
        for thread in threads:
            thread.join(timeout=30)
        with lock:
            done = list(completed)
        assert KILL_AFTER <= len(done) < CALLS  # killed mid-way
    finally:
        stop_server(server)

    again = start_server(tmp_path, args=("--tls-port", "0"))
    try:
        records = _records(again.data_dir / "ledger.sqlite3")
        missing = [r for r in done if r not in records]
        assert not missing, f"completed but not in the ledger: {missing}"
        assert all(n == 1 for n in records.values())
    finally:
        stop_server(again)
