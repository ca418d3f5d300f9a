"""A schema's `pattern` (a regular expression) as GBNF over the *encoded* text of a JSON string.

The grammar constrains what the model writes, and it writes JSON: a `"` or `\\` the pattern
matches must come out escaped, and no control character may come out raw. So a literal is
written in its JSON form, a class never yields a quote, a backslash or a control character
except as its JSON escape, and `.` is any character but those (or an escaped quote or
backslash). The regular expression is first compiled by Python, so a malformed one is refused
with its own message; what the translation does not support (lookarounds, backreferences,
anchors inside the pattern, flags) is refused by name. Repetition counts are bounded.
"""

from __future__ import annotations

import json
import re
import warnings
from dataclasses import dataclass

from flashlive.errors import InvalidArgument

MAX_PATTERN_CHARS = 1000
MAX_REPEAT = 8192  # the largest {m,n} (or minLength / maxLength, minItems / maxItems) taken

# Characters a JSON string can hold raw: everything but the quote, the backslash, controls.
SAFE_CHAR = r'[^"\\\x7F\x00-\x1F]'
DOT = r"(" + SAFE_CHAR + r' | "\\" ["\\/])'
_UNSAFE = [(0x00, 0x1F), (0x22, 0x22), (0x5C, 0x5C), (0x7F, 0x7F)]
_DIGITS = [(0x30, 0x39)]
_WORD = [(0x30, 0x39), (0x41, 0x5A), (0x5F, 0x5F), (0x61, 0x7A)]
_SPACE = [(0x09, 0x0D), (0x20, 0x20)]
_SHORTHANDS = {"d": _DIGITS, "w": _WORD, "s": _SPACE}
_CHAR_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "f": "\f", "v": "\v", "0": "\0"}
_UNSUPPORTED_ESCAPES = "bBAZzGpPkNgX123456789"


@dataclass
class _Class:
    ranges: list[tuple[int, int]]
    negated: bool = False


def gbnf_literal(text: str) -> str:
    """`text` as a GBNF string literal: quotes, backslashes and anything unprintable (controls,
    line and paragraph separators) escaped, so the literal is always one line of GBNF."""
    return (
        '"'
        + "".join(ch if ch.isprintable() and ch not in '"\\' else _code(ord(ch)) for ch in text)
        + '"'
    )


def json_fragment(text: str) -> str:
    """GBNF for exactly `text` as it appears inside a JSON string: escaped where JSON escapes."""
    return gbnf_literal(json.dumps(text, ensure_ascii=False)[1:-1]) if text else '""'


def pattern_expression(pattern: str, where: str) -> str:
    """GBNF for the inside of a JSON string whose value matches `pattern` (searched, as JSON
    Schema means it: unanchored ends match anything)."""
    if len(pattern) > MAX_PATTERN_CHARS:
        raise InvalidArgument(f"{where}: a pattern is at most {MAX_PATTERN_CHARS} characters")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a client's pattern is no concern of the server log
            re.compile(pattern)
    except (re.error, OverflowError, RecursionError) as exc:
        raise InvalidArgument(
            f"{where}: {pattern!r} is not a valid regular expression: {exc}"
        ) from None
    return _Translator(pattern, where).translate()


class _Translator:
    def __init__(self, pattern: str, where: str) -> None:
        self.text = pattern
        self.where = where
        self.at = 0

    def fail(self, what: str) -> InvalidArgument:
        return InvalidArgument(f"{self.where}: {what} in the pattern is not supported")

    def translate(self) -> str:
        text = self.text
        start = text.startswith("^")
        end = text.endswith("$") and not _escaped(text, len(text) - 1)
        self.text = text[1 if start else 0 : len(text) - 1 if end else len(text)]
        branches = self.branches(depth=0)
        if self.at != len(self.text):
            raise self.fail(f"{self.text[self.at]!r} at position {self.at}")
        if (start or end) and len(branches) > 1:
            raise self.fail("an anchor on one alternative of several (group them: ^(a|b)$)")
        anything = f"{DOT}*"
        parts = [
            "" if start else anything,
            "(" + " | ".join(branches) + ")",
            "" if end else anything,
        ]
        return " ".join(p for p in parts if p)

    def peek(self) -> str | None:
        return self.text[self.at] if self.at < len(self.text) else None

    def take(self) -> str:
        ch = self.text[self.at]
        self.at += 1
        return ch

    def branches(self, depth: int) -> list[str]:
        if depth > 32:
            raise self.fail("groups nested more than 32 deep")
        found = [self.sequence(depth)]
        while self.peek() == "|":
            self.take()
            found.append(self.sequence(depth))
        return found

    def sequence(self, depth: int) -> str:
        items: list[str] = []
        while (ch := self.peek()) is not None and ch not in "|)":
            atom = self.atom(depth)
            items.append(self.quantified(atom))
        return " ".join(items) if items else '""'

    def atom(self, depth: int) -> str:
        ch = self.take()
        if ch == "(":
            self.group_kind()
            inner = " | ".join(self.branches(depth + 1))
            if self.peek() != ")":
                raise self.fail("an unclosed group")
            self.take()
            return f"({inner})"
        if ch == "[":
            return _class_rule(self.char_class())
        if ch == ".":
            return DOT
        if ch in "^$":
            raise self.fail(f"the anchor {ch!r} anywhere but at the pattern's ends")
        if ch in "*+?{":
            raise self.fail(f"a quantifier {ch!r} with nothing before it")
        if ch == "\\":
            return _as_rule(self.escape())
        return json_fragment(ch)

    def group_kind(self) -> None:
        if self.peek() != "?":
            return
        self.take()
        kind = self.peek()
        if kind == ":":
            self.take()
        elif kind == "P" and self.text[self.at : self.at + 2] == "P<":
            close = self.text.find(">", self.at)
            if close < 0:
                raise self.fail("an unclosed group name")
            self.at = close + 1
        else:
            raise self.fail(f"the group '(?{kind or ''}'")

    def quantified(self, atom: str) -> str:
        ch = self.peek()
        if ch is None or ch not in "*+?{":
            return atom
        self.take()
        if ch == "{":
            low, high = self.counts()
            suffix = f"{{{low}}}" if low == high else f"{{{low},{'' if high is None else high}}}"
        else:
            suffix = ch
        if self.peek() == "?":
            self.take()  # lazy: the same strings match, only the search order differs
        elif self.peek() == "+":
            raise self.fail("a possessive quantifier")
        return f"({atom}){suffix}"

    def counts(self) -> tuple[int, int | None]:
        close = self.text.find("}", self.at)
        spec = self.text[self.at : close] if close >= 0 else ""
        if not re.fullmatch(r"[0-9]{1,5}(,[0-9]{0,5})?", spec):
            raise self.fail(f"the repetition {{{spec}")
        self.at = close + 1
        low_text, comma, high_text = spec.partition(",")
        low = int(low_text)
        high = int(high_text) if high_text else (None if comma else low)
        if max(low, high or 0) > MAX_REPEAT:
            raise InvalidArgument(
                f"{self.where}: a repetition is at most {MAX_REPEAT} in the pattern"
            )
        if high is not None and high < low:
            raise InvalidArgument(f"{self.where}: the repetition {{{spec}}} is empty")
        return low, high

    def escape(self) -> str | _Class:
        """What follows a backslash: one character, or a class (\\d, \\W, ...)."""
        if self.peek() is None:
            raise self.fail("a trailing backslash")
        ch = self.take()
        if ch.lower() in _SHORTHANDS:
            return _Class(list(_SHORTHANDS[ch.lower()]), negated=ch.isupper())
        if ch in _CHAR_ESCAPES:
            return _CHAR_ESCAPES[ch]
        if ch in "xu":
            digits = 2 if ch == "x" else 4
            code = self.text[self.at : self.at + digits]
            if not re.fullmatch(f"[0-9a-fA-F]{{{digits}}}", code):
                raise self.fail(f"the escape \\{ch}{code}")
            self.at += digits
            return chr(int(code, 16))
        if ch in _UNSUPPORTED_ESCAPES or ch.isalnum():
            raise self.fail(f"the escape \\{ch}")
        return ch

    def char_class(self) -> _Class:
        negated = self.peek() == "^"
        if negated:
            self.take()
        ranges: list[tuple[int, int]] = []
        first = True
        while True:
            if self.peek() is None:
                raise self.fail("an unclosed character class")
            if self.peek() == "]" and not first:
                self.take()
                return _Class(ranges, negated)
            first = False
            low = self.class_member()
            if isinstance(low, _Class):
                if low.negated:
                    raise self.fail("a negated shorthand (\\D, \\W, \\S) inside a class")
                ranges += low.ranges
                continue
            if self.peek() == "-" and self.text[self.at + 1 : self.at + 2] not in ("]", ""):
                self.take()
                high = self.class_member()
                if isinstance(high, _Class) or ord(high) < ord(low):
                    raise self.fail(f"the range {low}-...")
                ranges.append((ord(low), ord(high)))
            else:
                ranges.append((ord(low), ord(low)))

    def class_member(self) -> str | _Class:
        ch = self.take()
        if ch != "\\":
            if ch == "[" and self.peek() in (":", "=", "."):
                raise self.fail("a POSIX class")
            return ch
        return self.escape()


def _escaped(text: str, index: int) -> bool:
    backslashes = len(text[:index]) - len(text[:index].rstrip("\\"))
    return backslashes % 2 == 1


def _as_rule(item: str | _Class) -> str:
    return _class_rule(item) if isinstance(item, _Class) else json_fragment(item)


def _class_rule(cls: _Class) -> str:
    """A class as GBNF over JSON text: safe characters raw, the others as their escapes."""
    if cls.negated:
        return "[^" + _ranges_text(_merged(cls.ranges + _UNSAFE)) + "]"
    safe = _subtract(_merged(cls.ranges), _UNSAFE)
    escaped = [
        json_fragment(chr(code))
        for low, high in _merged(cls.ranges)
        for code in range(low, high + 1)
        if any(a <= code <= b for a, b in _UNSAFE)
    ]
    options = (["[" + _ranges_text(safe) + "]"] if safe else []) + escaped
    if not options:
        raise InvalidArgument("an empty character class in the pattern is not supported")
    return options[0] if len(options) == 1 else "(" + " | ".join(options) + ")"


def _merged(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for low, high in sorted(ranges):
        if out and low <= out[-1][1] + 1:
            out[-1] = (out[-1][0], max(out[-1][1], high))
        else:
            out.append((low, high))
    return out


def _subtract(ranges: list[tuple[int, int]], cut: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out = ranges
    for c_low, c_high in cut:
        kept: list[tuple[int, int]] = []
        for low, high in out:
            if high < c_low or low > c_high:
                kept.append((low, high))
                continue
            if low < c_low:
                kept.append((low, c_low - 1))
            if high > c_high:
                kept.append((c_high + 1, high))
        out = kept
    return out


def _ranges_text(ranges: list[tuple[int, int]]) -> str:
    return "".join(
        _class_char(low) if low == high else f"{_class_char(low)}-{_class_char(high)}"
        for low, high in ranges
    )


def _class_char(code: int) -> str:
    return chr(code) if chr(code).isalnum() and code < 0x80 else _code(code)


def _code(code: int) -> str:
    """A character as a GBNF escape."""
    if code <= 0xFF:
        return f"\\x{code:02X}"
    return f"\\u{code:04X}" if code <= 0xFFFF else f"\\U{code:08X}"
