"""The fuzz suites' tallies: printed in the test run's output, and written as JSON to the file
FLASHLIVE_FUZZ_REPORT names (one object per suite, merged), so a run's numbers can be quoted."""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path
from typing import Any

import pytest


def publish(config: pytest.Config, suite: str, tally: Counter[str], extra: dict[str, Any]) -> None:
    lines = [f"fuzz ({suite}): {sum(tally.values())} cases"]
    lines += [f"  {name}: {count}" for name, count in sorted(tally.items())]
    lines += [f"  {name}: {value}" for name, value in extra.items()]
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    capture = config.pluginmanager.get_plugin("capturemanager")
    if reporter is not None and capture is not None:
        with capture.global_and_fixture_disabled():
            reporter.write_line("")
            for line in lines:
                reporter.write_line(line)
    target = os.environ.get("FLASHLIVE_FUZZ_REPORT")
    if target:
        path = Path(target)
        known = json.loads(path.read_text()) if path.exists() else {}
        known[suite] = {"cases": sum(tally.values()), "by_outcome": dict(tally), **extra}
        path.write_text(json.dumps(known, indent=2, sort_keys=True) + "\n")
