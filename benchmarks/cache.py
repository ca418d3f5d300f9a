"""Context caching benchmark: time to first token cold, from a cachedContent, and by implicit reuse.

For documents of about 500, 2,000 (and, with --sizes, 8,000) tokens it measures through a server
process it starts itself (plain HTTP, server-sent events):
  cold      a document never seen before (a fresh nonce first) plus a question;
  explicit  the same kind of document stored with POST cachedContents, then a question that names
            it (the first use waits for the state computed at create time; the row times a later
            use);
  implicit  a document asked about once, then an unrelated request, then a second question on the
            same document: the server finds the first request's saved state by its tokens.
Then it measures what the usage ledger adds to each request (as `benchmarks.ledger` does).

    .venv/bin/python -m benchmarks.cache [--model ID] [--sizes 500,2000,8000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import secrets
import statistics
import time

import httpx

from benchmarks import ledger as ledger_bench
from benchmarks.rest import filler, server_process
from flashlive.config import Settings
from flashlive.models import DEFAULT_MODEL

GOAL = 10.0  # cold TTFT / cached TTFT, at 2,000 tokens
TOKENS_PER_SENTENCE = 17  # of `filler`, measured on both built-in tokenizers (16-18)
QUESTIONS = ("Who repaired the cracked water pump?", "Where was the telescope?",
             "What happened after the storm?", "Name one person in the text.")  # fmt: skip


def document(size: int, rng: random.Random) -> str:
    return f"Document {secrets.token_hex(6)}.\n\n" + filler(size // TOKENS_PER_SENTENCE, rng)


def ttft(client: httpx.Client, model: str, body: dict[str, object]) -> tuple[float, dict[str, int]]:
    """Seconds to the first streamed text, and the final usage metadata."""
    body = {**body, "generationConfig": {"maxOutputTokens": 4, "temperature": 0}}
    start = time.perf_counter()
    first: float | None = None
    usage: dict[str, int] = {}
    url = f"/v1beta/models/{model}:streamGenerateContent?alt=sse"
    with client.stream("POST", url, json=body) as response:
        response.raise_for_status()
        for line in response.iter_lines():
            if not line.startswith("data: "):
                continue
            chunk = json.loads(line[6:])
            if first is None:
                first = time.perf_counter() - start
            usage = chunk.get("usageMetadata", usage)
    assert first is not None, "the stream carried no chunk"
    return first, usage


def turn(text: str) -> dict[str, object]:
    return {"role": "user", "parts": [{"text": text}]}


def measure(client: httpx.Client, model: str, size: int, rng: random.Random) -> dict[str, float]:
    cold, usage = ttft(client, model, {"contents": [turn(document(size, rng)), turn(QUESTIONS[0])]})
    row = {"prompt": float(usage.get("promptTokenCount", 0)), "cold": cold}

    created = client.post(
        "/v1beta/cachedContents",
        json={"model": f"models/{model}", "contents": [turn(document(size, rng))], "ttl": "3600s"},
    )
    created.raise_for_status()
    name = created.json()["name"]
    asking = {"cachedContent": name, "contents": [turn(QUESTIONS[1])]}
    row["explicit_first"], _ = ttft(client, model, asking)
    row["explicit"], usage = ttft(client, model, {**asking, "contents": [turn(QUESTIONS[2])]})
    row["explicit_cached"] = float(usage.get("cachedContentTokenCount", 0))
    client.delete(f"/v1beta/{name}").raise_for_status()

    doc = document(size, rng)
    ttft(client, model, {"contents": [turn(doc), turn(QUESTIONS[0])]})
    ttft(client, model, {"contents": [turn("Say hello.")]})
    row["implicit"], usage = ttft(client, model, {"contents": [turn(doc), turn(QUESTIONS[3])]})
    row["implicit_cached"] = float(usage.get("cachedContentTokenCount", 0))
    return row


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--sizes", default="500,2000")
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    context = max(4096, 2 * max(sizes) + 1024)  # a cold prompt and a saved one both fit
    rng = random.Random(7)
    rows = []
    with (
        server_process(args.model, Settings().models_dir, context_size=context) as base_url,
        httpx.Client(base_url=base_url, timeout=900) as client,
    ):
        for size in sizes:
            row = measure(client, args.model, size, rng)
            rows.append((size, row))
            print(f"  {size}: {row}", flush=True)
    print(f"\nmodel {args.model}; TTFT in seconds (4 output tokens, temperature 0)")
    head = ("document", "prompt tok", "cold", "explicit", "x", "cached tok", "implicit", "x",
            "cached tok", "explicit 1st use")  # fmt: skip
    print(" | ".join(head))
    for size, r in rows:
        cells = (
            f"~{size}", f"{r['prompt']:.0f}", f"{r['cold']:.3f}", f"{r['explicit']:.3f}",
            f"{r['cold'] / r['explicit']:.1f}", f"{r['explicit_cached']:.0f}",
            f"{r['implicit']:.3f}", f"{r['cold'] / r['implicit']:.1f}",
            f"{r['implicit_cached']:.0f}", f"{r['explicit_first']:.3f}",
        )  # fmt: skip
        print(" | ".join(cells))
    print("\nledger write overhead per request (SQLite WAL, as the server writes it):")
    for line in asyncio.run(ledger_bench.bench(None, "SQLite WAL", 2000)):
        print(line)
    at_goal = [r for size, r in rows if size == 2000]
    if at_goal:
        ratio = statistics.median(r["cold"] / r["explicit"] for r in at_goal)
        print(f"\ngoal: explicit cache ≥ {GOAL:g}x faster at ~2,000 tokens: {ratio:.1f}x "
              f"{'PASS' if ratio >= GOAL else 'MISS'}")  # fmt: skip


if __name__ == "__main__":
    main()
