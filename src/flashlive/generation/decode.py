"""The output path: the text an engine writes passes a chain of small filters before the client
sees it: stop sequences, tool-call capture, hold-back of answers meaningful only whole (a forced
call, an enum answer), whitespace trim. Each filter has one shape; a new one (a safety filter)
is one more link in `OutputPath`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from flashlive.engine import FinishCause
from flashlive.generation.constraints import CALL_OPENERS, opens_call
from flashlive.generation.prompt import TOOL_CALL_OPEN
from flashlive.generation.text import MarkerSplit, StopMatcher, WhitespaceTrim


class Filter(Protocol):
    def feed(self, text: str) -> str:
        """The text that may go on now (may be less than given: some is held back)."""
        ...

    def flush(self) -> str:
        """At the end of the stream: what was held back and may still go on."""
        ...

    @property
    def done(self) -> bool:
        """Nothing more will go on: the stream may stop here."""
        ...


class HoldBack:
    """Lets nothing through: the whole text is read at the end (`text`)."""

    def __init__(self, start: str = "") -> None:
        self._pieces = [start]

    def feed(self, text: str) -> str:
        self._pieces.append(text)
        return ""

    def flush(self) -> str:
        return ""

    @property
    def done(self) -> bool:
        return False

    @property
    def text(self) -> str:
        return "".join(self._pieces)


class CallWatch(MarkerSplit):
    """Captures a tool call from its marker (or a free answer that opens like one); done once
    a call has begun, when there is a grammar to decode the rest of it under."""

    def __init__(self, call_grammar: str | None) -> None:
        super().__init__(TOOL_CALL_OPEN, CALL_OPENERS)
        self._call_grammar = call_grammar

    @property
    def done(self) -> bool:
        return opens_call(self.captured, self._call_grammar)


class Chain:
    """Filters in order, each fed what the one before let through. Once the stream ends, or a
    filter upstream is done, each later filter is flushed too."""

    def __init__(self, filters: Sequence[Filter]) -> None:
        self.filters = list(filters)

    def feed(self, text: str, *, last: bool = False) -> str:
        ending = last
        for f in self.filters:
            text = f.feed(text)
            ending = ending or f.done
            if ending:
                text += f.flush()
        return text

    @property
    def done(self) -> bool:
        return any(f.done for f in self.filters)


class OutputPath:
    """The chain one answer's text goes through, and what it leaves at the end."""

    def __init__(
        self,
        stops: tuple[str, ...],
        *,
        forced_call: bool = False,
        enum_answer: bool = False,
        capture_calls: bool = False,
        call_grammar: str | None = None,
    ) -> None:
        self.stops = StopMatcher(stops)
        self.trim = WhitespaceTrim()
        # A forced call or an enum answer is only meaningful whole: hold it back until the end.
        self.hold: HoldBack | None = None
        if forced_call:
            self.hold = HoldBack(TOOL_CALL_OPEN)
        elif enum_answer:
            self.hold = HoldBack()
        self.calls = CallWatch(call_grammar) if capture_calls and self.hold is None else None
        middle: list[Filter] = [f for f in (self.hold, self.calls) if f is not None]
        self.chain = Chain([self.stops, *middle, self.trim])

    def feed(self, text: str, *, last: bool = False) -> str:
        return self.chain.feed(text, last=last)

    @property
    def done(self) -> bool:
        return self.chain.done

    def cause(self, finish: FinishCause | None, before: FinishCause) -> FinishCause:
        """Why the answer ended so far: a stop sequence ends the turn whatever the engine says."""
        if self.stops.stopped:
            return FinishCause.END_OF_TURN
        return finish or before

    @property
    def raw(self) -> str | None:
        """The text held back or captured (a call, or what looked like one); None: none was."""
        if self.hold is not None:
            return self.hold.text
        return self.calls.captured if self.calls is not None else None

    @property
    def call_begun(self) -> bool:
        return self.calls is not None and self.calls.done
