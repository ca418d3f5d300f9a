"""docs/architecture.md stays true: it names every module of src/flashlive, and no other."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "src" / "flashlive"


def test_the_page_lists_exactly_the_modules_there_are() -> None:
    page = (ROOT / "docs" / "architecture.md").read_text()
    tree = page.split("## Modules", 1)[1].split("```")[1]
    listed, package = set(), ""
    for line in tree.splitlines()[1:]:
        if match := re.fullmatch(r"  (\w+)/", line):
            package = match[1] + "/"
        elif match := re.fullmatch(r"  (  )?(\w+\.py)\s+\S.*", line):
            listed.add((package if match[1] else "") + match[2])
            package = package if match[1] else ""
    modules = {
        str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*.py") if p.name != "__init__.py"
    }
    assert sorted(modules - listed) == [] and sorted(listed - modules) == []
