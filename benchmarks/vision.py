"""Vision benchmark: per-frame perception cost, the TTFT an image adds, and camera lag in Live.

Frames are 640x480 JPEGs rendered with Pillow: signs with a word on a board, plain walls,
gradients and noise. Three measurements, one server process for the last two:

1. in-process (before the server starts): `EmbeddedVision.observe` on each frame once, seconds
   per stage (decode, ocr, labels) and in all, p50/p95; the scene signature the Live driver
   computes per frame; `observe` again on the same bytes (the seen-image cache); and whether OCR
   read each sign's word. Also: whether one board showing a new word is a new scene to the
   driver (it skips a frame of the same scene as the last one it looked at).
2. REST: time to the first streamed token for the same short question with and without one
   image part, interleaved, a fresh sign per try (so the seen-image cache hides nothing).
3. Live, TEXT responses: -60 dBFS noise streams in real time in 40 ms chunks while the camera
   sends a new sign at `--fps`; each frame differs from the one before by the server's own scene
   rule (board, wall and word change). Every ~10 s, half-way between two frames, the client asks
   "What does the sign say now?"; the answer should name the latest frame's word or, at worst,
   the previous one's (lag of at most one frame). Answers naming an older sign, or none, fail.

    .venv/bin/python -m benchmarks.vision [--model ID] [--fps F] [--seconds S] [--repeats N]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import itertools
import os
import secrets
import signal
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from google import genai
from google.genai import types
from PIL import Image, ImageDraw, ImageFont

from benchmarks.live import (
    CHUNK,
    RATE,
    WARM_UP,
    Bench,
    Live,
    audio_message,
    fmt_s,
    pct,
    server_notes,
    server_process,
    speech_cache,
    synthesise,
    table,
)
from benchmarks.server import BenchServer
from benchmarks.soak import background, ticked
from benchmarks.turns import ask
from flashlive.config import Settings
from flashlive.models import BUILTIN_MODELS, DEFAULT_MODEL
from flashlive.perception.vision import EmbeddedVision, decode_image, frame_signature, same_scene

WIDTH, HEIGHT = 640, 480
JPEG = "image/jpeg"
TEXT_PX = 48  # tesseract's sparse-text mode reads this size well
BIG_TEXT_PX = 88  # a sign close to the camera
QUESTION = "What does the sign say now?"
ASK_EVERY_S = 10.0
LIVE_TOKENS = 24
REST_TOKENS = 8
TIMEOUT_S = 120.0
WORDS = (
    "APPLE", "RIVER", "CANDLE", "TIGER", "MARKET", "GARDEN", "PLANET", "BUTTER", "WINDOW",
    "ORANGE", "CASTLE", "PENCIL", "DRAGON", "SILVER", "BASKET", "FOREST", "HAMMER", "ISLAND",
    "JACKET", "KITTEN", "LEMON", "MIRROR", "NAPKIN", "OCEAN", "PEPPER", "ROCKET", "SADDLE",
    "TOMATO", "VIOLIN", "WALNUT", "YELLOW", "ZEBRA", "BRIDGE", "COFFEE", "DESERT", "FINGER",
    "GUITAR", "HONEY", "LADDER", "MEADOW",
)  # fmt: skip


# --- frames ---------------------------------------------------------------------------------


def jpeg(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.save(out, "JPEG", quality=85)
    return out.getvalue()


def wall(rng: np.random.Generator, noise: float = 6.0) -> Image.Image:
    """A lit wall: one colour, darker at the top, with sensor noise."""
    shade = np.linspace(0.6, 1.0, HEIGHT)[:, None, None]
    pixels = rng.integers(40, 200, 3) * shade + rng.normal(0.0, noise, (HEIGHT, WIDTH, 3))
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def sign(word: str, seed: int, *, text_px: int = TEXT_PX, moved: bool = True) -> bytes:
    """A white board with `word` on a wall; `moved` places board and wall colour by `seed`."""
    rng = np.random.default_rng(seed if moved else 0)
    image = wall(rng)
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=text_px)
    left, top, right, bottom = draw.textbbox((0, 0), word, font=font)
    w, h = int(right - left) + 2 * text_px, int(bottom - top) + 2 * text_px
    x = int(rng.integers(20, WIDTH - w - 20)) if moved else (WIDTH - w) // 2
    y = int(rng.integers(20, HEIGHT - h - 20)) if moved else (HEIGHT - h) // 2
    draw.rectangle((x, y, x + w, y + h), fill="white", outline="black", width=4)
    draw.text((x + w // 2, y + h // 2), word, font=font, fill="black", anchor="mm")
    return jpeg(image)


def scenes() -> list[tuple[str, str | None, bytes]]:
    """20 varied frames: (kind, the word a sign shows or None, JPEG)."""
    out: list[tuple[str, str | None, bytes]] = []
    for i in range(8):
        out.append(("sign", WORDS[i], sign(WORDS[i], i)))
    for i in range(2):
        out.append(("big sign", WORDS[8 + i], sign(WORDS[8 + i], 8 + i, text_px=BIG_TEXT_PX)))
    for i in range(4):
        out.append(("plain", None, jpeg(wall(np.random.default_rng(100 + i)))))
    for i in range(3):
        a, b = np.random.default_rng(200 + i).integers(0, 256, (2, 3))
        ramp = np.linspace(0.0, 1.0, WIDTH)[None, :, None]
        pixels = np.broadcast_to(a + (b - a) * ramp, (HEIGHT, WIDTH, 3))
        out.append(("gradient", None, jpeg(Image.fromarray(pixels.astype(np.uint8)))))
    for i in range(3):
        pixels = np.random.default_rng(300 + i).integers(0, 256, (HEIGHT, WIDTH, 3))
        out.append(("noise", None, jpeg(Image.fromarray(pixels.astype(np.uint8)))))
    return out


def signature(data: bytes) -> bytes:
    return frame_signature(decode_image(data, JPEG))


def camera(n: int) -> Iterator[tuple[str, bytes]]:
    """`n` signs on one board, each a new scene to the server's same-scene rule (it skips a frame
    otherwise): where a new word alone is not enough, the board moves."""
    last: bytes | None = None
    seed = 1000
    for i in range(n):
        word = WORDS[i % len(WORDS)]
        frame = sign(word, 0, moved=False)
        shape = signature(frame)
        while last is not None and same_scene(shape, last):
            seed += 1
            frame = sign(word, seed)
            shape = signature(frame)
        last = shape
        yield word, frame


# --- 1. in-process ----------------------------------------------------------------------------


def in_process() -> None:
    frames = scenes()
    began = time.perf_counter()
    vision = EmbeddedVision.load(Settings().models_dir)
    print(f"vision stages loaded in {time.perf_counter() - began:.2f} s", flush=True)
    vision.observe(sign("WARM", 999), JPEG)  # first calls pay for lazy set-up
    stages: dict[str, list[float]] = {}
    signing: list[float] = []
    cached: list[float] = []
    read: dict[str, list[bool]] = {}
    for kind, word, data in frames:
        seen = vision.observe(data, JPEG)
        for name, seconds in seen.seconds.items():
            stages.setdefault(name, []).append(seconds)
        stages.setdefault("total", []).append(sum(seen.seconds.values()))
        began = time.perf_counter()
        signature(data)
        signing.append(time.perf_counter() - began)
        began = time.perf_counter()
        vision.observe(data, JPEG)
        cached.append(time.perf_counter() - began)
        if word is not None:
            read.setdefault(kind, []).append(word in seen.text.upper())
    rows = [(name, fmt_s(pct(v, 50)), fmt_s(pct(v, 95)), fmt_s(max(v)), str(len(v)))
            for name, v in stages.items()]  # fmt: skip
    rows.append(("decode + scene signature (per Live frame)", fmt_s(pct(signing, 50)),
                 fmt_s(pct(signing, 95)), fmt_s(max(signing)), str(len(signing))))  # fmt: skip
    rows.append(("observe again, same bytes (cached)", f"{pct(cached, 50) * 1e6:.0f} µs",
                 f"{pct(cached, 95) * 1e6:.0f} µs", f"{max(cached) * 1e6:.0f} µs",
                 str(len(cached))))  # fmt: skip
    print(f"\n[1/3] per-frame perception, in-process, {len(frames)} frames of {WIDTH}x{HEIGHT} "
          f"(seconds)")  # fmt: skip
    print(table(rows, ("stage", "p50", "p95", "max", "n")))
    for kind, hits in read.items():
        print(f"OCR read the word on {sum(hits)}/{len(hits)} {kind}s "
              f"({TEXT_PX if kind == 'sign' else BIG_TEXT_PX} px text)")  # fmt: skip
    fixed = [signature(sign(w, 0, moved=False)) for w in WORDS[:8]]
    alike = sum(same_scene(a, b) for a, b in itertools.pairwise(fixed))
    print(
        f"one board, new word: {alike}/{len(fixed) - 1} changes are the same scene to the Live "
        "driver (not looked at)"
    )


# --- 2. REST ----------------------------------------------------------------------------------


def first_token_s(client: genai.Client, model: str, parts: list[types.Part]) -> float:
    config = types.GenerateContentConfig(max_output_tokens=REST_TOKENS, temperature=0.0)
    began = time.perf_counter()
    for chunk in client.models.generate_content_stream(
        model=model, contents=[types.Content(role="user", parts=parts)], config=config
    ):
        if chunk.text:
            return time.perf_counter() - began
    raise RuntimeError("the stream ended without text")


def rest(server: BenchServer, model: str, repeats: int) -> None:
    client = genai.Client(api_key="bench", http_options=types.HttpOptions(base_url=server.base_url))
    plain: list[float] = []
    seen: list[float] = []
    for i in range(repeats + 1):  # the first pair warms up, unmeasured
        image = types.Part.from_bytes(data=sign(WORDS[-1 - i], 5000 + i), mime_type=JPEG)
        question = types.Part.from_text(text=f"{secrets.token_hex(3)} {QUESTION}")
        without = first_token_s(client, model, [question])
        question = types.Part.from_text(text=f"{secrets.token_hex(3)} {QUESTION}")
        with_image = first_token_s(client, model, [image, question])
        if i:
            plain.append(without)
            seen.append(with_image)
    p50_plain, p50_seen = pct(plain, 50), pct(seen, 50)
    rows = [
        ("text only", fmt_s(p50_plain), fmt_s(pct(plain, 95)), "1.00"),
        ("text + one image", fmt_s(p50_seen), fmt_s(pct(seen, 95)), f"{p50_seen / p50_plain:.2f}"),
        ("added by the image", fmt_s(p50_seen - p50_plain), "-", "-"),
    ]
    print(f"\n[2/3] REST time to first token, {repeats} interleaved pairs, a fresh sign each "
          f"(seconds)")  # fmt: skip
    print(table(rows, ("request", "p50", "p95", "ratio")))


# --- 3. Live ----------------------------------------------------------------------------------


@dataclass
class Asked:
    at_s: float  # since the stream began
    latest: int  # index of the last frame sent before the question
    answer: str
    first_text_s: float

    def named(self, words: list[str]) -> str:
        """Which frame the answer names: latest, previous, older or none."""
        said = self.answer.upper()
        hits = [i for i, w in enumerate(words[: self.latest + 1]) if w in said]
        if not hits:
            return "none"
        back = self.latest - max(hits)
        return {0: "latest", 1: "previous"}.get(back, "older")


async def stream_audio(live: Live, stop: asyncio.Event) -> None:
    floor = background(10.0)
    chunks = [audio_message(floor[i : i + CHUNK].tobytes()) for i in range(0, floor.size, CHUNK)]
    start = time.perf_counter()
    n = 0
    while not stop.is_set():
        await asyncio.sleep(max(start + n * CHUNK / RATE - time.perf_counter(), 0))
        await live.ws.send(chunks[n % len(chunks)])
        n += 1


async def stream_camera(live: Live, frames: list[bytes], fps: float, sent: list[float]) -> None:
    start = time.perf_counter()
    for i, frame in enumerate(frames):
        await asyncio.sleep(max(start + i / fps - time.perf_counter(), 0))
        await live.send({"realtimeInput": {"video": {"mimeType": JPEG, "data": b64(frame)}}})
        sent.append(time.perf_counter())


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


async def live_camera(server: BenchServer, model: str, fps: float, seconds: float) -> None:
    shot = list(camera(int(seconds * fps) + 1))
    words = [word for word, _ in shot]
    await Bench(server, model, verbose=False).wait_ready(synthesise(WARM_UP, speech_cache()))
    live = await Live.open(server.ws_url, model, "TEXT", LIVE_TOKENS, TIMEOUT_S)
    stop = asyncio.Event()
    sent: list[float] = []
    asked: list[Asked] = []
    frames = [frame for _, frame in shot]
    tasks = [asyncio.create_task(stream_audio(live, stop)),
             asyncio.create_task(stream_camera(live, frames, fps, sent))]  # fmt: skip
    shots = tasks[1]
    try:
        start = time.perf_counter()
        due = ASK_EVERY_S
        while not shots.done() and due <= seconds:
            # Half-way between two frames, so "latest" and "previous" are never a race.
            await asyncio.sleep(max(start + due + 0.5 / fps - time.perf_counter(), 0))
            latest = len(sent) - 1
            at_s = time.perf_counter() - start
            turn, answer = await ask(live, QUESTION, len(asked))
            asked.append(Asked(at_s, latest, answer, turn.first_text_s))
            due = max(due + ASK_EVERY_S, time.perf_counter() - start)
        await shots
    finally:
        stop.set()
        shots.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await live.close()
    rate = (len(sent) - 1) / (sent[-1] - sent[0]) if len(sent) > 1 else 0.0
    counts = {k: 0 for k in ("latest", "previous", "older", "none")}
    for a in asked:
        counts[a.named(words)] += 1
    ttft = [a.first_text_s for a in asked]
    print(f"\n[3/3] Live camera at {fps:g} fps for {seconds:g} s with background audio "
          f"(TEXT out, {LIVE_TOKENS} tokens)")  # fmt: skip
    rows = [(f"{a.at_s:.1f}", f"#{a.latest} {words[a.latest]}", a.named(words),
             fmt_s(a.first_text_s), repr(a.answer.strip()[:70])) for a in asked]  # fmt: skip
    print(table(rows, ("asked at s", "latest frame", "names", "first text s", "answer")))
    print(
        f"frames sent {len(sent)} ({rate:.2f}/s); answers naming the latest "
        f"{counts['latest']}, previous {counts['previous']}, older {counts['older']}, "
        f"none {counts['none']}; first text p50 {fmt_s(pct(ttft, 50) if ttft else None)} s"
    )
    ok = bool(asked) and counts["older"] == counts["none"] == 0
    print(
        f"goal: a {fps:g} fps camera lags at most one frame on {os.cpu_count()} cores: {ticked(ok)}"
    )


# --- main -----------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="benchmarks.vision", description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=DEFAULT_MODEL, choices=[s.id for s in BUILTIN_MODELS])
    parser.add_argument("--fps", type=float, default=1.0, help="camera frames per second")
    parser.add_argument("--seconds", type=float, default=30.0, help="Live camera stream length")
    parser.add_argument("--repeats", type=int, default=5, help="REST pairs with/without image")
    args = parser.parse_args(argv)
    if args.fps <= 0 or args.seconds < ASK_EVERY_S or args.repeats < 1:
        parser.error(f"--fps > 0, --seconds >= {ASK_EVERY_S:g} and --repeats >= 1, please")
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # `kill` also stops the server
    started = time.perf_counter()
    print(f"model {args.model}; load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs",
          flush=True)  # fmt: skip
    in_process()
    with (
        tempfile.TemporaryDirectory(prefix="flashlive-bench-vision-") as tmp,
        server_process(args.model, Path(tmp)) as server,
    ):
        print(f"\nserver healthy after {time.perf_counter() - started:.1f} s", flush=True)
        try:
            rest(server, args.model, args.repeats)
            asyncio.run(live_camera(server, args.model, args.fps, args.seconds))
        finally:
            notes = server_notes(server.log())
            if notes:
                print(f"\nserver log: {len(notes)} notable lines (first 10):")
                print("\n".join(f"  {line}" for line in notes[:10]))
    print(f"\ntotal {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
