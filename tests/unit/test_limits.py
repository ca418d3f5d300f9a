"""The size limits of src/ hold: modules of at most 500 lines, functions of at most 60 (ruff's
PLR0912 keeps every function to 15 branches)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[2]


def load_limits() -> ModuleType:
    spec = importlib.util.spec_from_file_location("limits", ROOT / "scripts" / "limits.py")
    assert spec is not None and spec.loader is not None
    limits = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(limits)
    return limits


def test_no_module_or_function_of_src_is_over_its_limit() -> None:
    limits = load_limits()
    assert list(limits.over_limits(ROOT / "src")) == []


def test_the_check_finds_a_long_function(tmp_path: Path) -> None:
    limits = load_limits()
    body = "".join(f"    x{i} = {i}\n" for i in range(61))
    (tmp_path / "m.py").write_text("def long() -> None:\n" + body)
    assert [line.split(": ", 1)[1] for line in limits.over_limits(tmp_path)] == [
        "long is 62 lines (at most 60)"
    ]
