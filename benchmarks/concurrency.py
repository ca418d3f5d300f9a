"""Many REST streams on one server, through the official SDK: what continuous batching buys.

Measured side by side in one run against one server:
- one stream alone: its decode speed, and the time to first token (TTFT) of a short prompt;
- N streams started together: aggregate decode (all their tokens over the span from the first
  token to the last) and each stream's own decode speed;
- the short prompt again, sent while N - 1 long streams are decoding: its TTFT against alone.

    .venv/bin/python -m benchmarks.rest --concurrency-only [--streams N]
"""

from __future__ import annotations

import secrets
import statistics
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from google import genai
from google.genai import types

AGGREGATE_GOAL = 3.0  # N streams' aggregate decode over one stream's
PER_STREAM_GOAL = 4.0  # tok/s each at N streams (above speech rate)
TTFT_GOAL = 2.0  # a short prompt's TTFT beside N - 1 streams over its TTFT alone
QUESTION = "Write a long, detailed story about a lighthouse keeper and a storm."
SHORT = "Say hello."


@dataclass(frozen=True)
class Run:
    start: float
    first: float
    last: float
    tokens: int

    @property
    def decode_tps(self) -> float:
        return (self.tokens - 1) / max(self.last - self.first, 1e-9)


def stream_once(
    client: genai.Client, model: str, text: str, max_tokens: int, seed: int | None = None
) -> Run:
    """One greedy stream through the SDK, timed from the request to its first and last text."""
    config = types.GenerateContentConfig(temperature=0.0, max_output_tokens=max_tokens, seed=seed)
    first: float | None = None
    tokens = 0
    start = last = time.perf_counter()
    for chunk in client.models.generate_content_stream(model=model, contents=text, config=config):
        last = time.perf_counter()
        if first is None and chunk.text:
            first = last
        usage = chunk.usage_metadata
        if usage is not None and usage.candidates_token_count is not None:
            tokens = usage.candidates_token_count
    if first is None or tokens < 2:
        raise RuntimeError(f"only {tokens} tokens came back; cannot time decoding")
    return Run(start, first, last, tokens)


def fresh(text: str) -> str:
    return f"{secrets.token_hex(6)}\n{text}"  # a nonce first: no stream reuses another's cache


def together(make: Callable[[], genai.Client], model: str, n: int, max_tokens: int) -> list[Run]:
    clients = [make() for _ in range(n)]
    gate = threading.Barrier(n)

    def one(i: int) -> Run:
        gate.wait()
        return stream_once(clients[i], model, fresh(QUESTION), max_tokens)

    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(one, range(n)))


def short_beside(make: Callable[[], genai.Client], model: str, n: int, max_tokens: int) -> float:
    """TTFT of the short prompt sent once `n` long streams all produce tokens."""
    clients = [make() for _ in range(n)]
    started = threading.Barrier(n + 1)
    runs: list[Run] = []

    def long_one(i: int) -> None:
        config = types.GenerateContentConfig(temperature=0.0, max_output_tokens=max_tokens)
        seen = False
        stream = clients[i].models.generate_content_stream(
            model=model, contents=fresh(QUESTION), config=config
        )
        for chunk in stream:
            if not seen and chunk.text:
                seen = True
                started.wait()
        if not seen:
            started.wait()

    with ThreadPoolExecutor(n) as pool:
        futures = [pool.submit(long_one, i) for i in range(n)]
        started.wait()
        runs.append(stream_once(make(), model, fresh(SHORT), 8))
        for future in futures:
            future.result()
    return runs[0].first - runs[0].start


def report(make: Callable[[], genai.Client], model: str, streams: int, max_tokens: int) -> None:
    med = statistics.median
    alone_runs = [stream_once(make(), model, fresh(QUESTION), max_tokens) for _ in range(2)]
    alone_tps = med(r.decode_tps for r in alone_runs)
    short_alone = med(
        (r.first - r.start) for r in (stream_once(make(), model, fresh(SHORT), 8) for _ in range(3))
    )
    runs = together(make, model, streams, max_tokens)
    span = max(r.last for r in runs) - min(r.first for r in runs)
    aggregate = sum(r.tokens - 1 for r in runs) / span
    per_stream = med(r.decode_tps for r in runs)
    beside = med(short_beside(make, model, streams - 1, max_tokens * 2) for _ in range(2))
    rows = [
        ("decode, 1 stream (tok/s)", f"{alone_tps:.1f}", "-", "-"),
        (f"aggregate decode, {streams} streams (tok/s)", f"{aggregate:.1f}",
         f"{aggregate / alone_tps:.2f}x", f">= {AGGREGATE_GOAL:.1f}x"),
        (f"per-stream decode at {streams} (median tok/s)", f"{per_stream:.1f}", "-",
         f">= {PER_STREAM_GOAL:.0f} tok/s"),
        ("short prompt TTFT alone (s)", f"{short_alone:.2f}", "-", "-"),
        (f"short prompt TTFT beside {streams - 1} streams (s)", f"{beside:.2f}",
         f"{beside / short_alone:.2f}x", f"<= {TTFT_GOAL:.1f}x"),
    ]  # fmt: skip
    head = ("measure", "value", "ratio", "goal")
    widths = [max(len(r[i]) for r in [*rows, head]) for i in range(4)]
    print(" | ".join(h.ljust(w) for h, w in zip(head, widths, strict=True)))
    print("-|-".join("-" * w for w in widths))
    for row in rows:
        print(" | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)))
    print(f"\nstream tokens at {streams}: {[r.tokens for r in runs]}")
