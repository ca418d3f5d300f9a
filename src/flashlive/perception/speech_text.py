"""Shaping model text for a speech synthesizer.

`ClauseSplitter` cuts streamed model text into pieces worth synthesizing one at a time, so speech
can start after the first few words instead of after the whole answer. `speakable` removes what a
voice should not read out: markdown markup and long URLs.
"""

from __future__ import annotations

import re

_CLOSERS = re.escape("\"')]\u201d\u2019")
_BOUNDARY = re.compile(
    rf"(?P<sentence>[.!?\u2026]+[{_CLOSERS}]*)(?=\s)"
    rf"|(?P<clause>[,;:\u2014][{_CLOSERS}]*)(?=\s)"
    r"|(?P<newline>\n)"
)
# Words whose trailing period does not end a sentence.
_ABBREVIATIONS = frozenset(
    re.findall(
        r"\w+",
        "mr mrs ms dr prof sr jr st mt vs al approx dept est fig inc ltd co vol "
        "jan feb mar apr jun jul aug sep sept oct nov dec",
    )
)
_LAST_TOKEN = re.compile(r"(\S+)$")
_WORD_END = re.compile(r"\S+(?=\s)")


def _word_count(text: str) -> int:
    return len(text.split())


def _ends_sentence(before: str) -> bool:
    """Whether a period after `before` ends a sentence (not `e.g.`, `Dr.`, `J.`, `1.` bullets)."""
    match = _LAST_TOKEN.search(before)
    if match is None:
        return False
    token = match.group(1).lstrip("\"'([\u201c\u2018").rstrip(".")
    if token.lower() in _ABBREVIATIONS or "." in token:
        return False
    if len(token) == 1 and token.isupper():
        return False  # an initial, as in "J. R. R. Tolkien"
    line_start = before[: match.start()].rsplit("\n", 1)[-1].strip() == ""
    return not (line_start and token.isdigit())  # "1. " opening a list item


class ClauseSplitter:
    """Cuts streamed text into speakable pieces.

    The first piece is released at the first clause boundary once it has `first_min_words`
    words (or after `first_max_words` words, when given), so speech starts early; later pieces
    end at sentence ends or line breaks, or after `max_words` words, since a long piece delays
    its own first audio.
    """

    def __init__(
        self, first_min_words: int = 3, max_words: int = 25, first_max_words: int | None = None
    ) -> None:
        if first_min_words < 1 or max_words < first_min_words:
            raise ValueError("need 1 <= first_min_words <= max_words")
        if first_max_words is not None and first_max_words < first_min_words:
            raise ValueError("need first_min_words <= first_max_words")
        self.first_min_words = first_min_words
        self.max_words = max_words
        # A first piece cut after this many words even without punctuation: speech starts
        # before a one-sentence answer is written to its end.
        self.first_max_words = first_max_words
        self._buffer = ""
        self._first = True

    def feed(self, delta: str) -> list[str]:
        self._buffer += delta
        pieces: list[str] = []
        while (cut := self._next_cut()) is not None:
            piece = self._take(cut)
            if piece:
                pieces.append(piece)
        return pieces

    def flush(self) -> list[str]:
        """The text ended: returns what is left (then the splitter starts over)."""
        pieces = self.feed("")
        while _word_count(self._buffer) > self.max_words:
            pieces.append(self._take(self._forced_cut(self._buffer + " ")))
        rest = self._buffer.strip()
        self._buffer = ""
        self._first = True
        return [*pieces, rest] if rest else pieces

    def _take(self, cut: int) -> str:
        piece, self._buffer = self._buffer[:cut].strip(), self._buffer[cut:]
        if piece:
            self._first = False
        return piece

    def _next_cut(self) -> int | None:
        for match in _BOUNDARY.finditer(self._buffer):
            cut = self._boundary_cut(match)
            if cut is not None:
                return cut
            if _word_count(self._buffer[: match.start()]) > self.max_words:
                break
        words = [m.end() for m in _WORD_END.finditer(self._buffer)]
        if self._first and self.first_max_words and len(words) >= self.first_max_words:
            return words[self.first_max_words - 1]
        if len(words) > self.max_words:
            return self._forced_cut(self._buffer)
        return None

    def _boundary_cut(self, match: re.Match[str]) -> int | None:
        if match.group("newline") is not None:
            return match.end()
        before = self._buffer[: match.start()]
        if match.group("clause") is not None:
            words = _word_count(before)
            return match.end() if self._first and words >= self.first_min_words else None
        if match.group("sentence").startswith(".") and not _ends_sentence(before):
            return None
        return match.end() if before.strip() else None

    def _forced_cut(self, text: str) -> int:
        """Where to cut a piece that is too long: its last clause mark, else after max_words."""
        ends = [m.end() for m in _WORD_END.finditer(text)][: self.max_words]
        span = text[: ends[-1]]
        clause_marks = [m.end() for m in re.finditer(r"[,;:\u2014](?=\s)", span)]
        if clause_marks and _word_count(span[: clause_marks[-1]]) >= self.first_min_words:
            return clause_marks[-1]
        return ends[-1]


_FENCE = re.compile(r"^\s*```.*$", re.MULTILINE)
_MD_LINK = re.compile(r"!?\[([^\]]*)\]\((?:[^)\s]+)(?:\s+\"[^\"]*\")?\)")
# The path may not swallow the punctuation that ends the sentence around it.
_URL = re.compile(
    r"\b(?:https?://|www\.)([\w.-]*\w)(?::\d+)?"
    r"(?:[/?#](?:[^\s<>\"')\]]*[^\s<>\"')\].,;:!?])?)?",
    re.IGNORECASE,
)
_LINE_MARKER = re.compile(r"^\s*(?:#{1,6}\s+|>\s*|[-*+\u2022]\s+)", re.MULTILINE)
_EMPHASIS = re.compile(
    r"(\*{1,3}|~~)(?=\S)(.+?)(?<=\S)\1"
    r"|(?<!\w)(_{1,3})(?=\S)(.+?)(?<=\S)\3(?!\w)"  # not the underscores of snake_case
)
_SYMBOLS = re.compile(r"[*#`|~]+|(?<!\w)_+|_+(?!\w)")
_SPACE = re.compile(r"\s+")


def _host(match: re.Match[str]) -> str:
    host = match.group(1).lower()
    return host.removeprefix("www.")


def speakable(text: str) -> str:
    """Text as a voice should say it: no markdown markup, URLs reduced to their host names."""
    text = _FENCE.sub("", text)
    text = _MD_LINK.sub(r"\1", text)
    text = _URL.sub(_host, text)
    text = _LINE_MARKER.sub("", text)
    text = _EMPHASIS.sub(lambda m: m.group(2) or m.group(4), text)
    text = _SYMBOLS.sub(" ", text)
    return _SPACE.sub(" ", text).strip()
