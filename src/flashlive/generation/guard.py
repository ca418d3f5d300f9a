"""Keeps client text from forging control tokens.

The rendered prompt is tokenized with special tokens parsed, because the chat template
writes them (`<|im_start|>`, `<start_of_turn>`, ...). Text that came from the client
must not be able to do the same, or a user message could open a system turn. Every
occurrence of a control token's text in client strings gets a zero-width space after
its first character: the model still reads the characters, never the token.
"""

from __future__ import annotations

import re
from collections import defaultdict
from typing import Any

BREAK = "\u200b"


class ControlTokenGuard:
    def __init__(self, control_tokens: frozenset[str]) -> None:
        self._by_start: dict[str, dict[int, set[str]]] = defaultdict(lambda: defaultdict(set))
        for token in control_tokens:
            if len(token) >= 2:
                self._by_start[token[0]][len(token)].add(token)
        starts = "".join(re.escape(c) for c in self._by_start)
        # Only the first characters of control tokens are searched for, in C.
        self._starts = re.compile(f"[{starts}]") if starts else None

    def defuse(self, text: str) -> str:
        if self._starts is None:
            return text
        pieces: list[str] = []
        done = 0
        found = self._starts.search(text)
        while found is not None:
            at = found.start()
            lengths = self._by_start[text[at]]
            hit = next((n for n, tokens in lengths.items() if text[at : at + n] in tokens), 0)
            if hit:
                pieces += [text[done:at], text[at], BREAK, text[at + 1 : at + hit]]
                done = at + hit
            found = self._starts.search(text, at + max(hit, 1))
        pieces.append(text[done:])
        return "".join(pieces)

    def defuse_all(self, value: Any) -> Any:
        """`defuse` applied to every string inside JSON-like data (dict keys included)."""
        if isinstance(value, str):
            return self.defuse(value)
        if isinstance(value, list):
            return [self.defuse_all(v) for v in value]
        if isinstance(value, dict):
            return {self.defuse(str(k)): self.defuse_all(v) for k, v in value.items()}
        return value
