"""Ledger write overhead: how long `await ledger.record(...)` takes, one writer and many.

Each REST call awaits one record before its response leaves, so this time is added to every
request. It is measured on a fresh SQLite ledger (WAL, synchronous=NORMAL) in a temporary
directory, with one writer awaiting records back to back and with 16 concurrent writers (whose
waiting records the writer thread commits together). `--ledger-url postgresql://...` measures a
PostgreSQL ledger as well. Goal: well under 1 ms per request.

    .venv/bin/python -m benchmarks.ledger [--records N] [--ledger-url URL]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
import uuid
from pathlib import Path

from flashlive.ledger import Ledger, UsageRecord, open_ledger
from flashlive.ledger.records import utc_now

GOAL_MS = 1.0


def record() -> UsageRecord:
    return UsageRecord(
        request_id=uuid.uuid4().hex,
        time=utc_now(),
        key_hash="0123456789abcdef",
        model="gemma-3-270m",
        method="generateContent",
        input_tokens={"TEXT": 120},
        output_tokens={"TEXT": 40},
        latency_s=0.25,
    )


async def writer(ledger: Ledger, count: int, waits: list[float]) -> None:
    for _ in range(count):
        rec = record()
        started = time.perf_counter()
        await ledger.record(rec)
        waits.append(time.perf_counter() - started)


async def measure(ledger: Ledger, records: int, writers: int) -> tuple[list[float], float]:
    """Per-await latencies and the wall time for `records` records split over `writers`."""
    waits: list[float] = []
    started = time.perf_counter()
    await asyncio.gather(*(writer(ledger, records // writers, waits) for _ in range(writers)))
    return waits, time.perf_counter() - started


def row(name: str, waits: list[float], wall: float) -> str:
    ms = sorted(w * 1000 for w in waits)
    p99 = ms[min(len(ms) - 1, int(len(ms) * 0.99))]
    per_record = wall * 1000 / len(ms)
    verdict = "ok" if statistics.median(ms) < GOAL_MS else "over goal"
    return (
        f"{name:<28} {len(ms):>7} {statistics.mean(ms):>9.3f} {statistics.median(ms):>9.3f}"
        f" {p99:>9.3f} {per_record:>12.4f} {len(ms) / wall:>10.0f}  {verdict}"
    )


async def bench(url: str | None, label: str, records: int) -> list[str]:
    lines = []
    with tempfile.TemporaryDirectory() as tmp:
        ledger = open_ledger(url, Path(tmp))
        await measure(ledger, 100, 1)  # warm-up: schema, connections, page cache
        for writers in (1, 16):
            waits, wall = await measure(ledger, records, writers)
            lines.append(row(f"{label}, {writers} writer{'s' if writers > 1 else ''}", waits, wall))
        await ledger.close()
    return lines


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=4000)
    parser.add_argument("--ledger-url", help="also measure this (postgresql://...) ledger")
    args = parser.parse_args()
    print(
        f"{'ledger':<28} {'records':>7} {'mean ms':>9} {'p50 ms':>9} {'p99 ms':>9}"
        f" {'wall ms/rec':>12} {'rec/s':>10}"
    )
    for line in await bench(None, "SQLite WAL", args.records):
        print(line)
    if args.ledger_url:
        for line in await bench(args.ledger_url, "PostgreSQL", args.records):
            print(line)
    print(f"goal: p50 await under {GOAL_MS:g} ms per request")


if __name__ == "__main__":
    asyncio.run(main())
