"""Per-turn cost as a Live session grows: turn 1 against turn 50, side by side in one run.

One text session with a sliding window asks `--turns` questions in a row. Each turn's time to
first text, prompt tokens and reused tokens (`cachedContentTokenCount`) are recorded:

- alone: the session has the engine to itself;
- with a rival: a second session takes a turn between each of ours, so the engine holds the
  rival's context when ours comes back (its state must be restored, not recomputed);
- stateless: what a client that re-sends the whole conversation pays, with nothing kept
  (`generateContent` with a seed, which this server always computes from scratch), at the
  first and last turn's history.

    python -m benchmarks.turns [--turns 50] [--model ID] [--trigger-tokens N --target-tokens N]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from benchmarks.live import Live, server_process, table
from benchmarks.server import BenchServer
from flashlive.models import DEFAULT_MODEL

TIMEOUT_S = 600.0
TOPICS = ["rivers", "bridges", "volcanoes", "owls", "violins", "glaciers", "tea", "comets"]


@dataclass
class Turn:
    index: int
    first_text_s: float
    prompt: int
    reused: int


def question(i: int) -> str:
    return (
        f"Question {i}: in one short sentence, tell me something about {TOPICS[i % len(TOPICS)]}."
    )


async def ask(live: Live, text: str, index: int) -> tuple[Turn, str]:
    """One text turn: seconds to the first text, its usage, and the answer."""
    live.drain()
    began = time.perf_counter()
    await live.send(
        {"clientContent": {"turns": [{"role": "user", "parts": [{"text": text}]}],
                           "turnComplete": True}}
    )  # fmt: skip
    first: float | None = None
    answer = ""
    async with asyncio.timeout(TIMEOUT_S):
        while True:
            item = await live.inbox.get()
            if item is None:
                raise RuntimeError(f"the session ended: {live.closed}")
            at, message = item
            content = message.get("serverContent", {})
            for part in content.get("modelTurn", {}).get("parts", []):
                if part.get("text"):
                    first = first or at
                    answer += part["text"]
            if content.get("turnComplete"):
                usage = message.get("usageMetadata", {})
                turn = Turn(
                    index,
                    (first or at) - began,
                    int(usage.get("promptTokenCount", 0)),
                    int(usage.get("cachedContentTokenCount", 0)),
                )
                return turn, answer


async def session_turns(
    server: BenchServer, args: argparse.Namespace, rival: bool
) -> tuple[list[Turn], list[dict[str, Any]]]:
    window = {
        "contextWindowCompression": {
            "triggerTokens": args.trigger_tokens,
            "slidingWindow": {"targetTokens": args.target_tokens},
        },
        "generationConfig": {"responseModalities": ["TEXT"], "maxOutputTokens": args.max_tokens,
                             "temperature": 0.0},
    }  # fmt: skip
    ours = await Live.open(server.ws_url, args.model, "TEXT", args.max_tokens, TIMEOUT_S, window)
    other = (
        await Live.open(server.ws_url, args.model, "TEXT", args.max_tokens, TIMEOUT_S, window)
        if rival
        else None
    )
    turns: list[Turn] = []
    history: list[dict[str, Any]] = []
    try:
        for i in range(args.turns):
            if other is not None:
                await ask(other, question(i + 3), i)
            turn, answer = await ask(ours, question(i), i)
            turns.append(turn)
            history += [
                {"role": "user", "parts": [{"text": question(i)}]},
                {"role": "model", "parts": [{"text": answer}]},
            ]
            print(
                f"  {'rival' if rival else 'alone'} turn {i + 1}: first text "
                f"{turn.first_text_s:.3f} s, prompt {turn.prompt}, reused {turn.reused}",
                flush=True,
            )
    finally:
        await ours.close()
        if other is not None:
            await other.close()
    return turns, history


def stateless(server: BenchServer, model: str, history: list[dict[str, Any]]) -> tuple[float, int]:
    """Time to an answer of one token for `history` computed from nothing, and its tokens."""
    body = {"contents": history, "generationConfig": {"maxOutputTokens": 1, "seed": 7}}
    began = time.perf_counter()
    response = httpx.post(
        f"{server.base_url}/v1beta/models/{model}:generateContent", json=body, timeout=TIMEOUT_S
    )
    response.raise_for_status()
    return time.perf_counter() - began, int(response.json()["usageMetadata"]["promptTokenCount"])


def engine_counters(server: BenchServer) -> dict[str, float]:
    """The engine's batching counters, summed over models, from /metrics."""
    names = {"flashlive_engine_steps_total": "steps", "flashlive_engine_evicted_total": "evicted",
             "flashlive_engine_state_bytes_out_total": "out",
             "flashlive_engine_state_bytes_in_total": "in"}  # fmt: skip
    found = dict.fromkeys(names.values(), 0.0)
    for line in httpx.get(f"{server.base_url}/metrics", timeout=30).text.splitlines():
        name = line.split("{", 1)[0]
        if name in names:
            found[names[name]] += float(line.rsplit(" ", 1)[1])
    return found


def first_last(turns: list[Turn], n: int) -> tuple[float, float]:
    return (
        statistics.median(t.first_text_s for t in turns[:n]),
        statistics.median(t.first_text_s for t in turns[-n:]),
    )


async def run(args: argparse.Namespace, server: BenchServer) -> None:
    # One throwaway turn loads everything the first measured turn would otherwise pay for.
    await session_turns(server, argparse.Namespace(**{**vars(args), "turns": 1}), rival=False)
    alone, history = await session_turns(server, args, rival=False)
    rival, _ = await session_turns(server, args, rival=True)
    # The stateless client's last request: the whole conversation and the last question.
    last = history[:-1]
    cold_first_s, cold_first_tokens = stateless(server, args.model, history[:1])
    cold_last_s, cold_last_tokens = stateless(server, args.model, last)
    n = args.compare
    rows = []
    for label, turns in (("alone", alone), ("with a rival session", rival)):
        first, final = first_last(turns, n)
        computed = statistics.median(t.prompt - t.reused for t in turns[1:])
        rows.append((label, f"{first:.3f}", f"{final:.3f}", f"{final / first:.2f}",
                     "yes" if final / first <= 1.2 else "NO",
                     f"{min(t.prompt for t in turns)}-{max(t.prompt for t in turns)}",
                     f"{computed:.0f}"))  # fmt: skip
    rows.append((f"stateless (history of {cold_first_tokens} → {cold_last_tokens} tok)",
                 f"{cold_first_s:.3f}", f"{cold_last_s:.3f}", f"{cold_last_s / cold_first_s:.2f}",
                 "", "", "all"))  # fmt: skip
    print()
    print(
        f"model {args.model}; {args.turns} text turns; window {args.trigger_tokens} → "
        f"{args.target_tokens} tokens; first-text medians of the first and last {n} turns"
    )
    print(table(rows, ("session", "first turns s", "last turns s", "last/first", "goal ≤ 1.2",
                       "prompt tok", "computed tok/turn")))  # fmt: skip
    engine = engine_counters(server)
    print(f"engine after both runs: {engine['steps']:.0f} steps; states copied out "
          f"{engine['out'] / 1e6:.1f} MB, in {engine['in'] / 1e6:.1f} MB over "
          f"{2 * args.turns} turns; {engine['evicted']:.0f} sequences evicted")  # fmt: skip
    cuts = sum(1 for a, b in itertools.pairwise(alone) if b.prompt < a.prompt)
    print(f"window cuts (alone): {cuts}; last turn alone {alone[-1].first_text_s:.3f} s vs "
          f"stateless {cold_last_s:.3f} s for the whole conversation "
          f"({cold_last_s / alone[-1].first_text_s:.0f} times as long)")  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="benchmarks.turns", description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--turns", type=int, default=50)
    parser.add_argument("--compare", type=int, default=5, help="turns in each median")
    parser.add_argument("--max-tokens", type=int, default=24)
    parser.add_argument("--trigger-tokens", type=int, default=1200)
    parser.add_argument("--target-tokens", type=int, default=600)
    args = parser.parse_args(argv)
    if args.turns < 2 * args.compare:
        parser.error("--turns must be at least twice --compare")
    with (
        tempfile.TemporaryDirectory(prefix="flashlive-turns-") as tmp,
        server_process(args.model, Path(tmp), "--live-max-connection-s", "0") as server,
    ):
        asyncio.run(run(args, server))


if __name__ == "__main__":
    main()
