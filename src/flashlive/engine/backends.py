"""Which llama.cpp CPU backend this process computes on.

`scripts/install.sh` builds llama.cpp with `GGML_BACKEND_DL`: the CPU backend is not linked into
libggml but built once per instruction-set level (`libggml-cpu-haswell.so`,
`libggml-cpu-icelake.so`, ...), each able to score itself against the running CPU (0: this CPU
lacks an instruction it needs). `load()` scores every variant next to libllama and loads the best,
once per process, before any model is loaded, so one build runs on any x86-64 (or arm64) CPU and
still uses the fast instructions of the one it meets. `FLASHLIVE_CPU_VARIANT=<name>` loads that
variant instead (the self-check uses it to find one that works; a benchmark, to compare them).

A build with its CPU backend linked in (a plain `pip install llama-cpp-python`) already has it
registered: `load()` then reports the variant as "builtin".
"""

from __future__ import annotations

import ctypes
import os
import platform
import threading
from dataclasses import dataclass
from pathlib import Path

VARIANT_ENV = "FLASHLIVE_CPU_VARIANT"
BUILTIN = "builtin"
_PREFIX = "libggml-cpu-"


class BackendError(RuntimeError):
    """No CPU backend could be loaded; the message says what to do."""


@dataclass(frozen=True)
class Variant:
    name: str  # "haswell", "icelake", ... or BUILTIN
    path: Path | None
    score: int  # 0: this CPU cannot run it


@dataclass(frozen=True)
class CpuBackend:
    variant: Variant
    available: tuple[Variant, ...]  # every variant shipped, best first
    chosen_by: str  # "score", VARIANT_ENV, or "builtin"


_lock = threading.Lock()
_loaded: CpuBackend | None = None


def lib_dir() -> Path:
    import llama_cpp

    return Path(llama_cpp.__file__).parent / "lib"


def _libggml() -> ctypes.CDLL:
    """ggml's functions as libllama sees them. Not `CDLL(".../libggml.so")`: a wheel holds
    libggml.so and libggml.so.0 as two files, and loading the one libllama does not link would
    register the backend in a second, unused registry. A symbol looked up through libllama's
    handle resolves in the libraries it links."""
    from llama_cpp import llama_cpp as bindings

    lib: ctypes.CDLL = bindings._lib
    lib.ggml_backend_reg_count.restype = ctypes.c_size_t
    lib.ggml_backend_reg_count.argtypes = []
    lib.ggml_backend_load.restype = ctypes.c_void_p
    lib.ggml_backend_load.argtypes = [ctypes.c_char_p]
    lib.ggml_backend_reg_get.restype = ctypes.c_void_p
    lib.ggml_backend_reg_get.argtypes = [ctypes.c_size_t]
    lib.ggml_backend_reg_name.restype = ctypes.c_char_p
    lib.ggml_backend_reg_name.argtypes = [ctypes.c_void_p]
    return lib


def _score(path: Path) -> int:
    """The variant's own verdict on this CPU. Only its feature check runs: that code is built
    without the variant's instruction flags, so asking is safe on any CPU."""
    handle = ctypes.CDLL(str(path))
    try:
        score = handle.ggml_backend_score
        score.restype = ctypes.c_int
        score.argtypes = []
        return int(score())
    finally:
        import _ctypes

        _ctypes.dlclose(handle._handle)


def variants(directory: Path | None = None) -> list[Variant]:
    """The CPU variants shipped with the engine, best for this CPU first."""
    directory = directory or lib_dir()
    found = [
        Variant(path.name[len(_PREFIX) : -len(".so")], path, _score(path))
        for path in sorted(directory.glob(f"{_PREFIX}*.so"))
    ]
    return sorted(found, key=lambda v: (-v.score, v.name))


def _registered(lib: ctypes.CDLL) -> list[str]:
    names = []
    for i in range(lib.ggml_backend_reg_count()):
        raw = lib.ggml_backend_reg_name(lib.ggml_backend_reg_get(i))
        names.append(raw.decode() if raw else "?")
    return names


def load() -> CpuBackend:
    """Loads the CPU backend for this process (once); every later call returns the same."""
    global _loaded
    with _lock:
        if _loaded is None:
            _loaded = _load()
        return _loaded


def _load() -> CpuBackend:
    lib = _libggml()
    shipped = variants()
    if "CPU" in _registered(lib):
        if shipped:
            raise BackendError(
                "llama.cpp has a CPU backend linked in and CPU variant modules beside it; "
                "the install is mixed up: run `make install` again"
            )
        return CpuBackend(Variant(BUILTIN, None, 1), (), "builtin")
    if not shipped:
        raise BackendError(
            f"llama.cpp in {lib_dir()} has no CPU backend ({_PREFIX}*.so); "
            "rebuild the engine with `make install`"
        )
    wanted = os.environ.get(VARIANT_ENV, "").strip()
    if wanted:
        matches = [v for v in shipped if v.name == wanted]
        if not matches:
            raise BackendError(
                f"{VARIANT_ENV}={wanted} is not a shipped CPU variant; shipped: "
                + ", ".join(v.name for v in shipped)
            )
        if matches[0].score == 0:
            raise BackendError(
                f"{VARIANT_ENV}={wanted}: this CPU lacks instructions that variant needs; "
                "it can run: " + ", ".join(v.name for v in shipped if v.score > 0)
            )
        chosen, how = matches[0], VARIANT_ENV
    else:
        chosen, how = shipped[0], "score"
        if chosen.score == 0:
            raise BackendError(
                f"no CPU variant of llama.cpp runs on this {platform.machine()} CPU; "
                "shipped: " + ", ".join(v.name for v in shipped)
            )
    assert chosen.path is not None
    if not lib.ggml_backend_load(str(chosen.path).encode()):
        raise BackendError(f"llama.cpp could not load its CPU backend {chosen.path}")
    return CpuBackend(chosen, tuple(shipped), how)


def cpu_features() -> list[str]:
    """The instruction-set extensions the kernel reports for this CPU, those that matter to
    llama.cpp's variants (all of them on a CPU this list does not know)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    flags: set[str] = set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            flags.update(value.split())
            break
    interesting = [f for f in flags if f.startswith(_X86_PREFIXES) or f in _ARM_FEATURES]
    return sorted(interesting or flags)


_X86_PREFIXES = ("sse4", "avx", "fma", "f16c", "bmi2", "amx")
_ARM_FEATURES = frozenset(
    {"asimd", "asimddp", "asimdhp", "fphp", "sve", "sve2", "sme", "i8mm", "bf16"}
)


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() in ("model name", "Model", "CPU part"):
                return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
