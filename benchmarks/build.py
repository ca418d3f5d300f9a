"""Engine build benchmark: the portable llama.cpp build against one tuned to this machine.

The portable build (scripts/install.sh: every CPU variant, the best loaded at start) is what
flashlive ships; a native build (`GGML_NATIVE=ON`, pip's default) is tuned to the CPU that compiles
it and may crash on another. This benchmark builds the native one once (into the user cache, keyed
like the portable one), then measures both side by side on the default model: prompt processing
(a 512-token prompt) and decoding (64 tokens), each in its own child process, the builds taking
turns round after round so drift on a noisy machine falls on both; each build's best run is
reported (noise only ever slows a run down). Each `--variant` adds that CPU variant of the
portable build (say haswell, to see what AVX-512 brings); `--threads 1` keeps a busy machine's
preemption out of the comparison.

    .venv/bin/python -m benchmarks.build [--rounds N] [--reps N] [--threads N]
                                         [--variant NAME ...] [--model ID]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from flashlive.config import Settings
from flashlive.engine import backends
from flashlive.engine.selfcheck import bare_llama
from flashlive.models import BUILTIN_MODELS, DEFAULT_MODEL, assemble

PROMPT_TOKENS = 512
DECODE_TOKENS = 64


@dataclass(frozen=True)
class Build:
    label: str
    pythonpath: str | None  # where its llama_cpp package lies; None: the venv's
    variant: str | None  # FLASHLIVE_CPU_VARIANT for it, or None


def native_build(version: str) -> Path:
    """Builds (once) and unpacks llama-cpp-python with pip's default, CPU-tuned options."""
    with open("/proc/cpuinfo", "rb") as f:
        cpu = hashlib.sha256(f.read().split(b"\n\n")[0]).hexdigest()[:12]
    root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "flashlive"
    site = root / "bench" / f"native-llama-cpp-python-{version}-{cpu}"
    if (site / "llama_cpp").is_dir():
        return site
    wheels = site.with_name(site.name + "-wheel")
    print(f"building a native llama-cpp-python {version} for this CPU (once; minutes) ...")
    env = {**os.environ, "CMAKE_ARGS": "-DGGML_NATIVE=ON", "CMAKE_BUILD_PARALLEL_LEVEL": "2"}
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check"]
    subprocess.run(
        # --no-cache-dir: pip's own wheel cache would keep this CPU-tuned build for any later
        # build of the same version, whatever its options
        [*pip, "wheel", "--no-cache-dir", "--no-deps", "--no-binary", "llama-cpp-python",
         "-w", str(wheels),
         f"llama-cpp-python=={version}"],
        check=True, env=env,
    )  # fmt: skip
    wheel = next(wheels.glob("llama_cpp_python-*.whl"))
    subprocess.run(
        [*pip, "install", "-q", "--no-deps", "--target", str(site), str(wheel)], check=True
    )
    return site


def measure(build: Build, model: Path, reps: int, threads: int) -> dict[str, float | str]:
    env = dict(os.environ)
    env.pop(backends.VARIANT_ENV, None)
    if build.variant:
        env[backends.VARIANT_ENV] = build.variant
    if build.pythonpath:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [build.pythonpath, env.get("PYTHONPATH")]))
    command = [sys.executable, "-m", "benchmarks.build", "--child", str(model)]
    command += ["--reps", str(reps), "--threads", str(threads)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{build.label} failed ({done.returncode}):\n{done.stderr[-2000:]}")
    result: dict[str, float | str] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def child(model: Path, reps: int, threads: int) -> None:
    backend = backends.load()
    llm = bare_llama(model, n_ctx=2048, threads=threads)
    words = (
        "the quick brown fox jumps over a lazy dog while seven bright stars watch " * 80
    ).split()
    prompt = llm.tokenize(" ".join(words).encode(), add_bos=True)[:PROMPT_TOKENS]
    prefill, decode = [], []
    for _ in range(reps):
        llm.reset()
        started = time.perf_counter()
        llm.eval(prompt)
        prefilled = time.perf_counter()
        for _ in range(DECODE_TOKENS):
            llm.eval([int(llm.sample(temp=0.0))])
        decoded = time.perf_counter()
        prefill.append(len(prompt) / (prefilled - started))
        decode.append(DECODE_TOKENS / (decoded - prefilled))
    print(
        json.dumps(
            {
                "variant": backend.variant.name,
                "prefill": max(prefill),
                "decode": max(decode),
            }
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--reps", type=int, default=2, help="measurements per child process")
    parser.add_argument(
        "--variant",
        action="append",
        default=[],
        help="also measure this CPU variant of the portable build (repeatable; the pre-AVX2 "
        "levels x64, sse42 and sandybridge decode the default model at a few tokens a second)",
    )
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.reps, args.threads)
        return
    import importlib.metadata

    spec = next(s for s in BUILTIN_MODELS if s.id == args.model)
    model = assemble(spec, Settings().models_dir)
    version = importlib.metadata.version("llama-cpp-python")
    usable = [v.name for v in backends.variants() if v.score > 0]
    builds = [Build("native (GGML_NATIVE=ON)", str(native_build(version)), None)]
    builds.append(Build(f"portable, by score ({usable[0]})", None, None))
    for name in args.variant:
        if name not in usable:
            parser.error(f"--variant {name}: this CPU runs {', '.join(usable)}")
        builds.append(Build(f"portable, {name}", None, name))
    results: dict[str, list[dict[str, float | str]]] = {b.label: [] for b in builds}
    for round_ in range(args.rounds):
        for build in builds if round_ % 2 == 0 else reversed(builds):
            results[build.label].append(measure(build, model, args.reps, args.threads))
    print_table(spec.id, builds, results, args.threads)


def print_table(
    model: str, builds: list[Build], results: dict[str, list[dict[str, float | str]]], threads: int
) -> None:
    def best(label: str, key: str) -> float:
        # The best run, not the median: on a shared machine noise only ever slows a run down.
        return max(float(r[key]) for r in results[label])

    base = builds[0].label
    print(f"\n{model}: {PROMPT_TOKENS}-token prompt, {DECODE_TOKENS} tokens decoded; "
          f"CPU {backends.cpu_model()}, {threads} threads; best of "
          f"{len(results[base])} rounds\n")  # fmt: skip
    header = ["build", "prefill tok/s", "vs native", "decode tok/s", "vs native"]
    rows = [header]
    for build in builds:
        prefill, decode = best(build.label, "prefill"), best(build.label, "decode")
        rows.append(
            [
                build.label,
                f"{prefill:.1f}",
                f"{prefill / best(base, 'prefill'):.3f}",
                f"{decode:.2f}",
                f"{decode / best(base, 'decode'):.3f}",
            ]
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    for row in rows:
        print(
            "  ".join(
                c.ljust(w) if i == 0 else c.rjust(w)
                for i, (c, w) in enumerate(zip(row, widths, strict=True))
            )
        )


if __name__ == "__main__":
    main()
