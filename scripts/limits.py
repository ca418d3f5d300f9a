"""The size limits of src/: no module over 500 lines, no function over 60 lines, no function
with more than 15 branches (ruff's PLR0912 counts them; see pyproject.toml).

    python scripts/limits.py [PATH ...]    # prints each module or function over a limit
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from pathlib import Path

MAX_MODULE_LINES = 500
MAX_FUNCTION_LINES = 60


def over_limits(root: Path) -> Iterator[str]:
    """One line for each module or function under `root` that is over a size limit."""
    files = [root] if root.is_file() else sorted(root.rglob("*.py"))
    for path in files:
        text = path.read_text()
        lines = text.count("\n")
        if lines > MAX_MODULE_LINES:
            yield f"{path}: {lines} lines (at most {MAX_MODULE_LINES})"
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                assert node.end_lineno is not None
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    yield (
                        f"{path}:{node.lineno}: {node.name} is {length} lines "
                        f"(at most {MAX_FUNCTION_LINES})"
                    )


def main(paths: list[str]) -> int:
    found = [line for p in paths or ["src"] for line in over_limits(Path(p))]
    print("\n".join(found))
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
