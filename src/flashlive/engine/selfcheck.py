"""The engine's self-check: load a model and decode a few tokens, in a child process.

A llama.cpp build that does not suit the CPU it meets dies inside `llama_decode` with a signal
(SIGILL for a missing instruction, SIGSEGV for a kernel that misbehaves on it). In a child process
that is a report naming the signal, the CPU variant and the CPU's features, not a server that
vanishes. A pass is remembered under the cache directory, keyed by everything that could change
the verdict (the engine's libraries, the variant, the model file, the CPU), so a server start
repeats the check only when one of them changed.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from flashlive.engine import backends

log = logging.getLogger(__name__)

# Long enough that the prompt is computed as a batch (the matrix kernels), then a few tokens one
# at a time (the vector kernels): the two paths a variant can get wrong.
PROMPT = (
    "The following is a short list of European capitals. France: Paris. Germany: Berlin. "
    "Italy: Rome. Spain: Madrid. Portugal: Lisbon. Austria: Vienna. Poland: Warsaw. Greece:"
)
DECODE_TOKENS = 8
TIMEOUT_S = 300.0


@dataclass(frozen=True)
class CheckResult:
    ok: bool
    variant: str  # the CPU variant the check ran on ("?" when it died before saying)
    detail: str  # what happened: a pass's speed, or what killed the child
    prompt_tokens: int = 0
    prefill_tokens_per_s: float = 0.0
    decode_tokens_per_s: float = 0.0
    text: str = ""
    output: str = ""  # the child's last output lines, for a failure
    features: list[str] = field(default_factory=backends.cpu_features)


def check(
    model_path: Path, *, variant: str | None = None, timeout_s: float = TIMEOUT_S
) -> CheckResult:
    """Runs the check in a child process on `variant` (None: the one `backends.load` picks)."""
    env = dict(os.environ)
    if variant is not None:
        env[backends.VARIANT_ENV] = variant
    command = [sys.executable, "-m", "flashlive.engine.selfcheck", str(model_path)]
    try:
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=timeout_s, env=env, check=False
        )
    except subprocess.TimeoutExpired:
        return CheckResult(False, variant or "?", f"it did not finish within {timeout_s:g} s")
    tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-12:])
    if done.returncode == 0:
        last = done.stdout.strip().splitlines()[-1]
        return CheckResult(**json.loads(last))
    if done.returncode < 0:
        name = signal.Signals(-done.returncode).name
        what = f"llama.cpp was killed by {name}"
    else:
        what = f"the check exited with status {done.returncode}"
    ran_on = _reported_variant(done.stderr) or variant or "?"
    return CheckResult(False, ran_on, what, output=tail)


def _reported_variant(stderr: str) -> str | None:
    for line in stderr.splitlines():
        if line.startswith("selfcheck: variant "):
            return line.split()[-1]
    return None


def check_or_find(model_path: Path) -> tuple[CheckResult, CheckResult | None]:
    """The check on the variant that would be used; when that fails and no variant was chosen by
    hand, the first lower variant that passes (None when none does)."""
    first = check(model_path)
    if first.ok or os.environ.get(backends.VARIANT_ENV):
        return first, None
    for candidate in _usable_variants():
        if candidate == first.variant:
            continue
        result = check(model_path, variant=candidate)
        if result.ok:
            return first, result
    return first, None


def _usable_variants() -> list[str]:
    try:
        return [v.name for v in backends.variants() if v.score > 0]
    except (ImportError, OSError):
        return []


def failure_message(result: CheckResult, working: CheckResult | None) -> str:
    lines = [
        f"The engine self-check failed: {result.detail} while loading a model and decoding "
        f"{DECODE_TOKENS} tokens on llama.cpp's '{result.variant}' CPU variant.",
        f"CPU: {backends.cpu_model()}; features: {' '.join(result.features) or 'unknown'}.",
    ]
    if result.output:
        lines.append("Its last output:\n  " + result.output.replace("\n", "\n  "))
    if working is not None:
        lines.append(
            f"The '{working.variant}' variant passes: set {backends.VARIANT_ENV}={working.variant} "
            "to use it."
        )
    lines.append(
        "Rebuild the engine: rm -rf ~/.cache/flashlive/wheels .venv/.llama-build && make install"
    )
    return "\n".join(lines)


class EngineUnusable(RuntimeError):
    """The engine crashes on this CPU on every variant tried; the message says what to do."""


def ensure(model_path: Path, cache_dir: Path) -> CheckResult:
    """Before serving: the check's verdict for this engine, model and CPU, remembered or run now.

    When the variant picked by score fails and a lower one passes, this process (and every later
    start, until something changes) uses the lower one, and says so. A variant chosen by hand is
    never replaced. Raises EngineUnusable when nothing passes.
    """
    result = remembered(cache_dir, model_path)
    if result is None:
        first, working = check_or_find(model_path)
        if not first.ok and working is None:
            raise EngineUnusable(failure_message(first, None))
        result = first if first.ok else working
        assert result is not None
        if not first.ok:
            log.warning(
                "%s\nServing on '%s' meanwhile.", failure_message(first, result), result.variant
            )
        remember(cache_dir, model_path, result)
    best = _best_variant()
    if not os.environ.get(backends.VARIANT_ENV) and best is not None and result.variant != best:
        os.environ[backends.VARIANT_ENV] = result.variant
    return result


def _best_variant() -> str | None:
    usable = _usable_variants()
    return usable[0] if usable else None


# --- remembering a pass ----------------------------------------------------------------------


def pass_key(model_path: Path) -> str:
    """Changes whenever the verdict could: engine libraries, variant choice, model file, CPU."""
    digest = hashlib.sha256()
    try:
        lib_dir = backends.lib_dir()
        libraries = sorted(lib_dir.glob("*.so"))
    except ImportError:
        libraries = []
    for path in [*libraries, model_path]:
        st = path.stat()
        digest.update(f"{path}:{st.st_size}:{st.st_mtime_ns}\n".encode())
    digest.update(os.environ.get(backends.VARIANT_ENV, "").encode())
    digest.update(backends.cpu_model().encode())
    digest.update(" ".join(backends.cpu_features()).encode())
    return digest.hexdigest()[:32]


def remembered(cache_dir: Path, model_path: Path) -> CheckResult | None:
    path = cache_dir / f"{pass_key(model_path)}.json"
    try:
        return CheckResult(**json.loads(path.read_text()))
    except (OSError, ValueError, TypeError):
        return None


def remember(cache_dir: Path, model_path: Path, result: CheckResult) -> None:
    cache_dir.mkdir(parents=True, exist_ok=True)
    path = cache_dir / f"{pass_key(model_path)}.json"
    partial = path.with_suffix(f".partial-{os.getpid()}")
    partial.write_text(json.dumps(asdict(result)))
    os.replace(partial, path)


# --- the child ---------------------------------------------------------------------------------


def bare_llama(model_path: Path, *, n_ctx: int, threads: int) -> Any:
    """A llama.cpp model with nothing of the server around it: what the check (and the build
    benchmark) run on."""
    from llama_cpp import Llama

    return Llama(
        model_path=str(model_path),
        n_ctx=n_ctx,
        n_batch=512,
        n_threads=threads,
        n_threads_batch=threads,
        verbose=False,
    )


def _child(model_path: Path) -> None:
    backend = backends.load()
    # Said before the model loads, so a crash after it still names the variant.
    sys.stderr.write(f"selfcheck: variant {backend.variant.name}\n")
    sys.stderr.flush()
    llm = bare_llama(model_path, n_ctx=512, threads=os.cpu_count() or 1)
    tokens = llm.tokenize(PROMPT.encode(), add_bos=True)
    started = time.perf_counter()
    llm.eval(tokens)
    prefilled = time.perf_counter()
    out: list[int] = []
    for _ in range(DECODE_TOKENS):
        token = int(llm.sample(temp=0.0))
        out.append(token)
        llm.eval([token])
    decoded = time.perf_counter()
    text = llm.detokenize(out).decode("utf-8", errors="replace")
    prefill_tps = len(tokens) / max(prefilled - started, 1e-9)
    decode_tps = DECODE_TOKENS / max(decoded - prefilled, 1e-9)
    result = CheckResult(
        ok=True,
        variant=backend.variant.name,
        detail=(
            f"{len(tokens)} prompt tokens at {prefill_tps:.0f} tokens/s, "
            f"{DECODE_TOKENS} decoded at {decode_tps:.1f} tokens/s"
        ),
        prompt_tokens=len(tokens),
        prefill_tokens_per_s=round(prefill_tps, 1),
        decode_tokens_per_s=round(decode_tps, 2),
        text=text,
    )
    print(json.dumps(asdict(result)))


def main() -> None:
    parser = argparse.ArgumentParser(description="load a model and decode a few tokens")
    parser.add_argument("model", type=Path)
    _child(parser.parse_args().model)


if __name__ == "__main__":
    main()
