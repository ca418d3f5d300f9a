"""JSON from the wire, parsed with the bounds everything behind the edge relies on.

A REST body or a Live frame is parsed here once, before any model sees it. What passes is a
tree of at most `MAX_DEPTH` levels whose strings are valid Unicode and whose numbers fit a
protobuf field (64-bit integers, finite doubles), so later code (validation, prompt rendering,
tokenizing, JSON dumps) can neither recurse out of stack nor meet a value it cannot encode.
Each refusal is one InvalidArgument naming where in the message it is.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from flashlive.errors import InvalidArgument

MAX_DEPTH = 64  # nested objects and arrays; Gemini's own messages need fewer than 20
INT64_MIN, INT64_MAX = -(2**63), 2**64 - 1  # int64 and uint64 both fit
MAX_INT_CHARS = 21  # a longer literal is out of range whatever its digits: no int() of it
PREFIX = "Invalid JSON payload received. "
_SURROGATE = re.compile("[\ud800-\udfff]")
NOT_UNICODE = "holds a lone UTF-16 surrogate, which is not Unicode"


@dataclass(frozen=True)
class _OutOfRange:
    """A number literal no protobuf field holds, kept (not raised) so its place can be named."""

    literal: str


def parse_wire_json(raw: str | bytes | bytearray) -> Any:
    """The JSON value in `raw`; raises InvalidArgument for malformed or out-of-bounds input."""
    try:
        value = json.loads(
            raw,
            parse_int=_integer,
            parse_float=_double,
            parse_constant=_OutOfRange,  # NaN and Infinity are not JSON
        )
    except RecursionError:
        raise InvalidArgument(PREFIX + f"JSON nests deeper than {MAX_DEPTH} levels.") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InvalidArgument(PREFIX + str(exc)) from None
    _check(value)
    return value


def _integer(literal: str) -> int | _OutOfRange:
    if len(literal) > MAX_INT_CHARS:
        return _OutOfRange(literal)
    number = int(literal)
    return number if INT64_MIN <= number <= INT64_MAX else _OutOfRange(literal)


def _double(literal: str) -> float | _OutOfRange:
    number = float(literal)
    return number if math.isfinite(number) else _OutOfRange(literal)


def _check(value: Any) -> None:
    """Depth, strings and numbers of the whole tree, without recursion."""
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, str):
            if _SURROGATE.search(node):
                _refuse(value, _has_surrogate, NOT_UNICODE)
        elif isinstance(node, _OutOfRange):
            _refuse(value, _is_out_of_range, f"{_shown(node.literal)} is out of range")
        elif isinstance(node, dict | list):
            if depth >= MAX_DEPTH:
                _refuse(value, _too_deep, f"nests deeper than {MAX_DEPTH} levels")
            if isinstance(node, dict):
                for key, item in node.items():
                    if _SURROGATE.search(key):
                        _refuse(value, _has_surrogate, NOT_UNICODE)
                    stack.append((item, depth + 1))
            else:
                stack.extend((item, depth + 1) for item in node)


def _has_surrogate(node: Any, key: str | None, depth: int) -> bool:
    return (isinstance(node, str) and _SURROGATE.search(node) is not None) or (
        key is not None and _SURROGATE.search(key) is not None
    )


def _is_out_of_range(node: Any, key: str | None, depth: int) -> bool:
    return isinstance(node, _OutOfRange)


def _too_deep(node: Any, key: str | None, depth: int) -> bool:
    return isinstance(node, dict | list) and depth >= MAX_DEPTH


def _refuse(root: Any, found: Callable[[Any, str | None, int], bool], what: str) -> None:
    """Raise for the first node `found` picks, named by its path (found again: errors only)."""
    stack: list[tuple[Any, str | None, int, str]] = [(root, None, 0, "")]
    while stack:
        node, key, depth, path = stack.pop()
        if found(node, key, depth):
            where = path.lstrip(".") or "the request"
            raise InvalidArgument(PREFIX + f"{where}: {what}.")
        if isinstance(node, dict) and depth < MAX_DEPTH:
            stack.extend(
                (item, name, depth + 1, f"{path}.{_shown(name)}")
                for name, item in reversed(node.items())
            )
        elif isinstance(node, list) and depth < MAX_DEPTH:
            items = list(enumerate(node))
            stack.extend((item, None, depth + 1, f"{path}[{i}]") for i, item in reversed(items))
    raise AssertionError("the node refused was found once")


def _shown(text: str, limit: int = 40) -> str:
    """A printable, bounded rendering of client text for an error message."""
    printable = text.encode("utf-8", "backslashreplace").decode("ascii", "backslashreplace")
    return printable if len(printable) <= limit else printable[: limit - 3] + "..."
