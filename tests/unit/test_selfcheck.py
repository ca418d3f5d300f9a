"""The self-check's policy before serving, with the child process's verdicts scripted."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from flashlive.engine import backends, selfcheck
from flashlive.engine.selfcheck import CheckResult


@pytest.fixture
def model(tmp_path: Path) -> Path:
    path = tmp_path / "model.gguf"
    path.write_bytes(b"GGUF")
    return path


def scripted(monkeypatch: pytest.MonkeyPatch, passing: set[str]) -> list[str | None]:
    """The best variant is 'zen4'; only those in `passing` decode. Returns what was tried."""
    tried: list[str | None] = []

    def check(model_path: Path, *, variant: str | None = None, **_: object) -> CheckResult:
        tried.append(variant)
        name = variant or "zen4"
        if name in passing:
            return CheckResult(True, name, "decoded")
        return CheckResult(False, name, "llama.cpp was killed by SIGSEGV")

    monkeypatch.setattr(selfcheck, "check", check)
    monkeypatch.setattr(selfcheck, "_usable_variants", lambda: ["zen4", "icelake", "haswell"])
    # set, then unset: either way monkeypatch puts back what the process had when the test ends
    monkeypatch.setenv(backends.VARIANT_ENV, "")
    monkeypatch.delenv(backends.VARIANT_ENV)
    return tried


def test_a_crashing_best_variant_gives_way_to_the_first_lower_one_that_passes(
    monkeypatch: pytest.MonkeyPatch, model: Path, tmp_path: Path
) -> None:
    tried = scripted(monkeypatch, passing={"haswell"})
    result = selfcheck.ensure(model, tmp_path / "cache")
    assert (result.ok, result.variant) == (True, "haswell")
    assert tried == [None, "icelake", "haswell"]
    assert os.environ[backends.VARIANT_ENV] == "haswell"  # what this process loads


def test_the_fallback_is_remembered_for_the_next_start(
    monkeypatch: pytest.MonkeyPatch, model: Path, tmp_path: Path
) -> None:
    scripted(monkeypatch, passing={"icelake"})
    selfcheck.ensure(model, tmp_path / "cache")
    tried = scripted(monkeypatch, passing={"icelake"})  # a new start: nothing chosen by hand
    assert selfcheck.ensure(model, tmp_path / "cache").variant == "icelake"
    assert tried == []  # remembered: no child process at all


def test_a_variant_chosen_by_hand_is_never_replaced(
    monkeypatch: pytest.MonkeyPatch, model: Path, tmp_path: Path
) -> None:
    tried = scripted(monkeypatch, passing={"haswell"})
    monkeypatch.setenv(backends.VARIANT_ENV, "zen4")
    with pytest.raises(selfcheck.EngineUnusable, match="'zen4' CPU variant"):
        selfcheck.ensure(model, tmp_path / "cache")
    assert tried == [None]


def test_when_nothing_passes_the_message_says_what_crashed_and_how_to_rebuild(
    monkeypatch: pytest.MonkeyPatch, model: Path, tmp_path: Path
) -> None:
    scripted(monkeypatch, passing=set())
    with pytest.raises(selfcheck.EngineUnusable) as failure:
        selfcheck.ensure(model, tmp_path / "cache")
    message = str(failure.value)
    assert "killed by SIGSEGV" in message and "'zen4' CPU variant" in message
    assert "features:" in message and "make install" in message
