"""Keeps client text from forging control tokens.

The rendered prompt is tokenized with special tokens parsed, because the chat template
writes them (`<|im_start|>`, `<start_of_turn>`, ...). Text that came from the client
must not be able to do the same, or a user message could open a system turn. Every
occurrence of a control token's text in client strings gets a zero-width space after
its first character: the model still reads the characters, never the token.
"""

from __future__ import annotations

import re
from typing import Any

BREAK = "\u200b"


class ControlTokenGuard:
    def __init__(self, control_tokens: frozenset[str]) -> None:
        tokens = sorted(t for t in control_tokens if len(t) >= 2)
        # One pass in C over the text: the tokens as a trie of alternatives, so at any position
        # at most one branch goes on per character (text made of nothing but "<" included).
        self._tokens = re.compile(_trie(tokens)) if tokens else None

    def defuse(self, text: str) -> str:
        if self._tokens is None:
            return text
        return self._tokens.sub(_broken, text)

    def defuse_all(self, value: Any) -> Any:
        """`defuse` applied to every string inside JSON-like data (dict keys included)."""
        if isinstance(value, str):
            return self.defuse(value)
        if isinstance(value, list):
            return [self.defuse_all(v) for v in value]
        if isinstance(value, dict):
            return {self.defuse(str(k)): self.defuse_all(v) for k, v in value.items()}
        return value


def _broken(found: re.Match[str]) -> str:
    token = found[0]
    return token[0] + BREAK + token[1:]


def _trie(words: list[str]) -> str:
    """A regular expression matching any of `words`, the longest at each position, as nested
    alternatives sharing their prefixes."""
    root: dict[str, Any] = {}
    for word in words:
        node = root
        for ch in word:
            node = node.setdefault(ch, {})
        node[""] = {}
    return _alternatives(root)


def _alternatives(node: dict[str, Any]) -> str:
    branches = [re.escape(ch) + _alternatives(child) for ch, child in node.items() if ch]
    if not branches:
        return ""
    body = branches[0] if len(branches) == 1 else "(?:" + "|".join(branches) + ")"
    if "" in node:  # a word ends here; a longer one may go on
        return f"(?:{body})?"
    return body
