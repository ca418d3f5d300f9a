"""The portable engine build: CPU variants scored at load time, the self-check, `flashlive doctor`.

These run on the engine `scripts/install.sh` built, the same one every other test uses.
"""

from __future__ import annotations

import os
import platform
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import FAST_MODEL, free_port

from flashlive.config import Settings
from flashlive.engine import backends, selfcheck
from flashlive.models import BUILTIN_MODELS, assemble


@pytest.fixture(scope="module")
def fast_model() -> Path:
    spec = next(s for s in BUILTIN_MODELS if s.id == FAST_MODEL)
    return assemble(spec, Settings().models_dir)


def test_the_engine_ships_cpu_variants_and_never_the_amx_one() -> None:
    names = {v.name for v in backends.variants()}
    if platform.machine() in ("x86_64", "AMD64"):
        # x64 runs on any x86-64 CPU; AMX kernels crash with this project's models.
        assert {"x64", "haswell", "skylakex", "icelake", "zen4"} <= names
        assert "sapphirerapids" not in names
    else:
        assert names


def test_the_variant_loaded_is_the_best_this_cpu_can_run() -> None:
    code = (
        "from flashlive.engine import backends; b = backends.load();"
        "print(b.variant.name, b.chosen_by)"
    )
    env = {k: v for k, v in os.environ.items() if k != backends.VARIANT_ENV}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    name, how = out.stdout.split()
    best = backends.variants()[0]
    assert best.score > 0
    assert (name, how) == (best.name, "score")


def test_a_variant_can_be_chosen_by_hand_and_a_wrong_one_is_refused() -> None:
    code = "from flashlive.engine import backends; print(backends.load().variant.name)"
    env = {**os.environ, backends.VARIANT_ENV: "x64" if platform.machine() == "x86_64" else ""}
    if env[backends.VARIANT_ENV]:
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
        assert out.stdout.strip() == "x64", out.stderr
    env[backends.VARIANT_ENV] = "no-such-variant"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.returncode != 0
    assert "no-such-variant is not a shipped CPU variant" in out.stderr


def test_the_self_check_decodes_on_the_real_engine(fast_model: Path) -> None:
    result = selfcheck.check(fast_model)
    assert result.ok, result
    assert result.variant == backends.variants()[0].name
    assert result.prompt_tokens > 32 and result.text.strip()
    assert result.prefill_tokens_per_s > 0 and result.decode_tokens_per_s > 0


def test_a_crash_in_the_child_is_reported_with_its_signal_variant_and_cpu(
    fast_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The child process dies as llama.cpp would on an unsuitable CPU: by SIGSEGV, after naming
    # the variant it loaded.
    crashing = tmp_path / "python"
    crashing.write_text("#!/bin/sh\necho 'selfcheck: variant haswell' >&2\nkill -SEGV $$\n")
    crashing.chmod(crashing.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setattr(sys, "executable", str(crashing))
    result = selfcheck.check(fast_model)
    assert not result.ok
    assert result.detail == "llama.cpp was killed by SIGSEGV"
    assert result.variant == "haswell"
    message = selfcheck.failure_message(result, None)
    assert "SIGSEGV" in message and "'haswell' CPU variant" in message
    assert " ".join(backends.cpu_features()) in message
    assert "make install" in message
    with pytest.raises(selfcheck.EngineUnusable, match="SIGSEGV"):
        selfcheck.ensure(fast_model, tmp_path / "selfcheck")


def test_a_pass_is_remembered_per_engine_model_and_variant(
    fast_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = tmp_path / "selfcheck"
    monkeypatch.delenv(backends.VARIANT_ENV, raising=False)
    first = selfcheck.ensure(fast_model, cache)
    assert first.ok and selfcheck.remembered(cache, fast_model) == first
    monkeypatch.setenv(backends.VARIANT_ENV, backends.variants()[-1].name)
    assert selfcheck.remembered(cache, fast_model) is None  # another variant: check again


def test_doctor_reports_engine_models_components_and_disk(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "flashlive.cli", "doctor", "--data-dir", str(tmp_path / "data"),
         "--model", FAST_MODEL],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    report = out.stdout
    for expected in (
        "cpu     features",
        f"engine  variant loaded         {backends.variants()[0].name}",
        "engine  self-check",
        "models  qwen2.5-coder-1.5b-instruct",
        "speech  Whisper tiny.en",
        "speech  voice",
        "vision  OCR",
        "tls ",
        "store   ledger",
        "disk    data dir",
    ):
        assert expected in report, report
    assert "FAIL" not in report, report


def test_serve_refuses_to_start_when_the_voice_asked_for_cannot_load(tmp_path: Path) -> None:
    # Piper made unimportable for this process only: a package of that name that fails.
    shadow = tmp_path / "shadow" / "piper"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ImportError('piper is not installed here')\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLASHLIVE_")}
    env["PYTHONPATH"] = os.pathsep.join([str(shadow.parent), env.get("PYTHONPATH", "")])
    out = subprocess.run(
        [sys.executable, "-m", "flashlive.cli", "serve", "--model", FAST_MODEL, "--tts", "piper",
         "--port", str(free_port()), "--tls-port", "0", "--data-dir", str(tmp_path / "data")],
        capture_output=True, text=True, timeout=300, env=env,
    )  # fmt: skip
    assert out.returncode != 0
    assert "--tts piper: the Piper voice does not load: piper is not installed here" in out.stderr
