"""The README's configuration table and `flashlive serve`'s flags say the same thing.

Every row names flags the parser has; every flag sets a Settings field, so FLASHLIVE_<FIELD>
sets it too; every flag has a row.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from flashlive.cli import _parser
from flashlive.config import Settings

README = Path(__file__).resolve().parents[2] / "README.md"


def table_rows() -> list[list[str]]:
    text = README.read_text()
    section = text.split("\n## Configuration\n", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| `")]
    assert len(rows) > 20, "the configuration table was not found"
    return [re.findall(r"`([^`]+)`", row.split("|")[1]) for row in rows]


def serve_flags() -> dict[str, str]:
    parser = _parser()
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    serve = subparsers.choices["serve"]
    return {
        option: action.dest
        for action in serve._actions
        for option in action.option_strings
        if option.startswith("--") and option != "--help"
    }


def test_every_row_is_a_flag_and_an_environment_variable() -> None:
    flags = serve_flags()
    for names in table_rows():
        assert names, "a row names no flag"
        for name in names:
            assert name.startswith("--"), f"{name}: the table lists flags (each is also an env var)"
            assert name in flags, f"the README lists {name}, which `flashlive serve` does not take"
            assert flags[name] in Settings.model_fields, f"{name} sets no setting (no env var)"


def test_every_flag_has_a_row() -> None:
    listed = {name for names in table_rows() for name in names}
    assert set(serve_flags()) - listed == set()
