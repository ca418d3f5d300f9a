"""Server overhead benchmark: the REST API through the official SDK vs the same engine in-process.

For prompts of about 30, 500 and 2000 tokens it measures time to first token (TTFT) and decode
speed twice, interleaved: through a flashlive server process it starts itself (google-genai,
`generate_content_stream` over plain HTTP) and through `LlamaCppEngine.stream` in this process,
fed the exact tokens and sampling parameters `GenerationService.prepare` gives the server.
Every measured prompt starts with a fresh nonce, so no run reuses another's KV cache beyond the
fixed chat-template preamble.

Then N streams at once through the same server (`concurrency.py`): aggregate and per-stream
decode, and a short prompt's TTFT beside N - 1 decoding streams, each against one stream alone.

    .venv/bin/python -m benchmarks.rest [--model ID] [--repeats N] [--max-tokens N]
                                        [--streams N] [--concurrency-only]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import secrets
import signal
import statistics
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from google import genai
from google.genai import types

from benchmarks import concurrency
from benchmarks.server import flashlive_server
from flashlive.config import Settings
from flashlive.engine.base import CancelToken, common_prefix
from flashlive.engine.llamacpp import LlamaCppOptions
from flashlive.generation.service import GenerationService, Prepared
from flashlive.models import BUILTIN_MODELS, DEFAULT_MODEL, ModelManager
from flashlive.protocol.content import Content, Part, Role
from flashlive.protocol.generate import GenerateContentRequest, GenerationConfig

CONTEXT_SIZE = 4096
OUTPUT_LIMIT = 2048
SIZES = (30, 500, 2000)
SEED = 1234
INSTRUCTION = "Summarise the text above in detail."
TTFT_GOAL = 1.10  # server TTFT at most this multiple of in-process TTFT
DECODE_GOAL = 0.95  # server decode speed at least this fraction of in-process speed
START_TIMEOUT_S = 300.0

_SUBJECTS = ("The harbour engineer", "A retired botanist", "Our night-shift nurse", "The mayor",
             "A curious student", "The old lighthouse keeper", "Two volunteer firefighters",
             "The bakery owner", "A travelling violinist", "The county surveyor")  # fmt: skip
_VERBS = ("inspected", "repaired", "photographed", "described", "measured", "painted",
          "catalogued", "questioned", "rebuilt", "carried")  # fmt: skip
_OBJECTS = ("the cracked water pump", "a box of faded letters", "the broken weather vane",
            "three copper kettles", "the northern footbridge", "an unfinished tapestry",
            "the school's telescope", "a crate of winter apples", "the flooded cellar")  # fmt: skip
_PLACES = ("near the river mouth", "behind the railway station", "on the windy hill",
           "inside the town library", "at the edge of the marsh", "beside the market square",
           "under the stone arch", "in the abandoned mill")  # fmt: skip
_TIMES = ("before sunrise", "during the autumn fair", "after a long storm", "on a quiet Sunday",
          "while the bells rang", "late in the evening", "in the first week of spring")  # fmt: skip


@dataclass(frozen=True)
class Sample:
    ttft_s: float
    decode_tps: float
    generated: int
    prompt_tokens: int

    def __str__(self) -> str:
        return (
            f"{self.prompt_tokens} tok: TTFT {self.ttft_s * 1e3:.0f} ms, "
            f"{self.decode_tps:.1f} tok/s over {self.generated} tok"
        )


def filler(n_sentences: int, rng: random.Random) -> str:
    sentences = [
        f"{rng.choice(_SUBJECTS)} {rng.choice(_VERBS)} {rng.choice(_OBJECTS)} "
        f"{rng.choice(_PLACES)} {rng.choice(_TIMES)}."
        for _ in range(n_sentences)
    ]
    paragraphs = [" ".join(sentences[i : i + 5]) for i in range(0, len(sentences), 5)]
    return "\n\n".join(paragraphs)


def compose(nonce: str, body: str) -> str:
    """The nonce comes first, so two prompts part ways at their very first user token."""
    return f"{nonce}\n{body}\n\n{INSTRUCTION}"


@contextmanager
def server_process(model: str, models_dir: Path, context_size: int = CONTEXT_SIZE) -> Iterator[str]:
    """Start `flashlive serve` on a free loopback port, yield its base URL, always stop it."""
    with (
        tempfile.TemporaryDirectory(prefix="flashlive-bench-") as tmp,
        flashlive_server(
            model,
            Path(tmp),
            "--models-dir",
            str(models_dir),
            "--context-size",
            str(context_size),
            "--output-token-limit",
            str(OUTPUT_LIMIT),
        ) as server,  # fmt: skip
    ):
        yield server.base_url


class Bench:
    def __init__(self, runner: asyncio.Runner, service: GenerationService, model: str,
                 client: genai.Client, max_tokens: int) -> None:  # fmt: skip
        self.runner, self.service, self.model = runner, service, model
        self.client, self.max_tokens = client, max_tokens
        self.seen: list[list[int]] = []
        self.cancel = CancelToken()  # set on the way out: stops an in-flight generation
        probes = [self.prepare(f"{c} {INSTRUCTION}").tokens for c in "QZ"]
        self.preamble = common_prefix(*probes)  # the template prefix every prompt shares

    def prepare(self, text: str) -> Prepared:
        config = GenerationConfig(temperature=0.0, seed=SEED, max_output_tokens=self.max_tokens)
        request = GenerateContentRequest(
            contents=[Content(role=Role.USER, parts=[Part(text=text)])], generation_config=config
        )
        return self.runner.run(self.service.prepare(self.model, request))

    def body_for(self, size: int) -> str:
        """The longest filler (at least one sentence) whose prompt stays within `size` tokens."""
        n = 1
        while (
            len(self.prepare(compose("0" * 12, filler(n + 1, random.Random(size)))).tokens) <= size
        ):
            n += 1
        return filler(n, random.Random(size))

    def fresh(self, body: str) -> tuple[str, Prepared]:
        """A prompt whose tokens share nothing beyond the preamble with any earlier prompt."""
        while True:
            text = compose(secrets.token_hex(6), body)
            prepared = self.prepare(text)
            reuse = max((common_prefix(prepared.tokens, old) for old in self.seen), default=0)
            if reuse <= self.preamble:
                self.seen.append(prepared.tokens)
                return text, prepared

    def in_process(self, body: str) -> Sample:
        _, prepared = self.fresh(body)
        return self.runner.run(self._engine_run(prepared))

    async def _engine_run(self, prepared: Prepared) -> Sample:
        engine = prepared.model.engine
        first: float | None = None
        count = 0
        self.cancel = CancelToken()  # the engine sets it when the stream ends
        start = last = time.perf_counter()
        async for piece in engine.stream(prepared.tokens, prepared.params, self.cancel):
            last = time.perf_counter()  # the final (finish) piece ends the window, as on the wire
            if piece.token_id is not None:
                count += 1
                first = last if first is None else first
        return _sample(start, first, last, count, len(prepared.tokens))

    def server(self, body: str) -> Sample:
        text, prepared = self.fresh(body)
        run = concurrency.stream_once(self.client, self.model, text, self.max_tokens, seed=SEED)
        return _sample(run.start, run.first, run.last, run.tokens, len(prepared.tokens))


def _sample(start: float, first: float | None, last: float, count: int, prompt: int) -> Sample:
    if first is None or count < 2:
        raise RuntimeError(f"only {count} tokens came back; cannot time decoding")
    return Sample(first - start, (count - 1) / (last - first), count, prompt)


def report(rows: list[tuple[int, list[Sample], list[Sample]]]) -> None:
    med = statistics.median
    head = ("prompt tok", "TTFT in-proc ms", "TTFT server ms", "TTFT ratio", "decode in-proc tok/s",
            "decode server tok/s", "decode ratio", "out tok in/srv")  # fmt: skip
    print(" | ".join(head))
    print("-|-".join("-" * len(h) for h in head))
    verdicts = []
    for _, local, remote in rows:
        t_in, t_srv = med(s.ttft_s for s in local) * 1e3, med(s.ttft_s for s in remote) * 1e3
        d_in, d_srv = med(s.decode_tps for s in local), med(s.decode_tps for s in remote)
        prompt = int(med(s.prompt_tokens for s in local + remote))
        out = f"{int(med(s.generated for s in local))}/{int(med(s.generated for s in remote))}"
        cells = (f"{prompt}", f"{t_in:.1f}", f"{t_srv:.1f}", f"{t_srv / t_in:.2f}x",
                 f"{d_in:.1f}", f"{d_srv:.1f}", f"{d_srv / d_in:.2f}x", out)  # fmt: skip
        print(" | ".join(c.rjust(len(h)) for c, h in zip(cells, head, strict=True)))
        ttft_ok, decode_ok = t_srv / t_in <= TTFT_GOAL, d_srv / d_in >= DECODE_GOAL
        verdicts.append(
            f"  {prompt:>5} tok: TTFT {'PASS' if ttft_ok else 'MISS'}, "
            f"decode {'PASS' if decode_ok else 'MISS'}"
        )
    print(f"\ngoals: TTFT overhead <= {TTFT_GOAL:.2f}x, decode >= {DECODE_GOAL:.2f}x (medians)")
    print("\n".join(verdicts))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="benchmarks.rest", description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=DEFAULT_MODEL, choices=[s.id for s in BUILTIN_MODELS])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--streams", type=int, default=8, help="concurrent streams (8)")
    parser.add_argument(
        "--concurrency-only", action="store_true", help="only the concurrent-streams table"
    )
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # `kill` also stops the server
    models_dir = Settings().models_dir
    options = LlamaCppOptions(context_size=CONTEXT_SIZE)
    manager = ModelManager(list(BUILTIN_MODELS), models_dir=models_dir, options=options)
    service = GenerationService(manager, output_token_limit=OUTPUT_LIMIT)
    print(f"model {args.model}, repeats {args.repeats}, max tokens {args.max_tokens}", flush=True)
    bench: Bench | None = None
    with asyncio.Runner() as runner, server_process(args.model, models_dir) as base_url:
        try:
            runner.run(manager.get(args.model))

            def make() -> genai.Client:
                return genai.Client(
                    api_key="bench", http_options=types.HttpOptions(base_url=base_url)
                )

            client = make()
            if args.concurrency_only:
                concurrency.report(make, args.model, args.streams, args.max_tokens)
                return
            bench = Bench(runner, service, args.model, client, args.max_tokens)
            print(f"shared chat-template preamble: {bench.preamble} tokens; load average "
                  f"{os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs", flush=True)  # fmt: skip
            rng = random.Random(SEED)
            bench.in_process(filler(1, rng))  # warm-up of both paths, not measured
            bench.server(filler(1, rng))
            rows = []
            for size in SIZES:
                body = bench.body_for(size)
                local: list[Sample] = []
                remote: list[Sample] = []
                for i in range(args.repeats):  # A/B/A/B: never both generating at once
                    local.append(bench.in_process(body))
                    remote.append(bench.server(body))
                    print(
                        f"~{size} #{i + 1}: in-process {local[-1]}, server {remote[-1]}", flush=True
                    )
                print(f"~{size}: prompt tokens {[s.prompt_tokens for s in local + remote]}",
                      flush=True)  # fmt: skip
                rows.append((size, local, remote))
            print()
            report(rows)
            print(f"\n{args.streams} concurrent streams through the server:")
            concurrency.report(make, args.model, args.streams, args.max_tokens)
            print(f"load average at the end: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
        finally:
            if bench is not None:
                bench.cancel.cancel()
            runner.run(manager.aclose())


if __name__ == "__main__":
    main()
