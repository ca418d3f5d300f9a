"""Streaming text filters: stop sequences, tool-call capture and whitespace trim, fed one piece at
a time. Each has one shape (`feed`, `flush`, `done`): `generation/decode.py` chains them."""

from __future__ import annotations


def _partial_suffix(buffer: str, needles: list[str]) -> int:
    """Length of the longest end of `buffer` that begins one of `needles` (but is not all of it)."""
    longest = 0
    for needle in needles:
        for k in range(min(len(needle) - 1, len(buffer)), longest, -1):
            if buffer.endswith(needle[:k]):
                longest = k
                break
    return longest


class StopMatcher:
    """Releases text as soon as it cannot be the start of a stop sequence.

    The stop sequence itself is never released, nor anything after it.
    """

    def __init__(self, stops: tuple[str, ...] | list[str]) -> None:
        self._stops = [s for s in stops if s]
        self._held = ""
        self.stopped = False

    def feed(self, text: str) -> str:
        if self.stopped:
            return ""
        buffer = self._held + text
        hit = self._first_hit(buffer)
        hold = _partial_suffix(buffer, self._stops)
        # A longer stop sequence that has begun before the hit may still match: wait for it.
        if hit is not None and hit <= len(buffer) - hold:
            self.stopped = True
            self._held = ""
            return buffer[:hit]
        self._held = buffer[len(buffer) - hold :]
        return buffer[: len(buffer) - hold]

    @property
    def done(self) -> bool:
        return self.stopped

    def _first_hit(self, buffer: str) -> int | None:
        hits = [i for i in (buffer.find(s) for s in self._stops) if i >= 0]
        return min(hits) if hits else None

    def flush(self) -> str:
        """The held text at the end of the stream, cut at a stop sequence it may contain."""
        rest, self._held = self._held, ""
        if self.stopped:
            return ""
        hit = self._first_hit(rest)
        if hit is None:
            return rest
        self.stopped = True
        return rest[:hit]


class MarkerSplit:
    """Passes text through until `marker` appears; from the marker on, text is captured.

    With `openers`, an answer that *begins* with one of them (after whitespace) is captured
    from its start: small models often answer a tool call as bare or fenced JSON.
    """

    def __init__(self, marker: str, openers: tuple[str, ...] = ()) -> None:
        self._marker = marker
        self._openers = openers
        self._held = ""
        self._released = False
        self.captured: str | None = None

    def feed(self, text: str) -> str:
        if self.captured is not None:
            self.captured += text
            return ""
        buffer = self._held + text
        if not self._released and self._openers:
            head = buffer.lstrip()
            if any(head.startswith(o) for o in self._openers):
                self.captured, self._held = buffer, ""
                return ""
            if not head or any(o.startswith(head) for o in self._openers):
                self._held = buffer
                return ""
        at = buffer.find(self._marker)
        if at >= 0:
            self.captured, self._held = buffer[at:], ""
            return buffer[:at]
        hold = _partial_suffix(buffer, [self._marker])
        self._held = buffer[len(buffer) - hold :]
        released = buffer[: len(buffer) - hold]
        self._released = self._released or bool(released.strip())
        return released

    def flush(self) -> str:
        rest, self._held = self._held, ""
        return rest

    @property
    def done(self) -> bool:
        return False  # what it captures is read at the end, however long it runs


class WhitespaceTrim:
    """Drops whitespace before the first and after the last visible character of an answer.

    Trailing whitespace is held back until more text follows, and dropped at the end.
    """

    def __init__(self) -> None:
        self._started = False
        self._pending = ""

    def feed(self, text: str) -> str:
        if not self._started:
            text = text.lstrip()
            self._started = bool(text)
        if not text:
            return ""
        body = text.rstrip()
        if not body:
            self._pending += text
            return ""
        out = self._pending + body
        self._pending = text[len(body) :]
        return out

    def flush(self) -> str:
        """Nothing: whitespace at the end is dropped. It stays pending, so that text that
        follows after all (a call that turned out to be text) comes after it as written."""
        return ""

    @property
    def done(self) -> bool:
        return False
