"""The output path: each filter alone, then the chain they make for one answer."""

from __future__ import annotations

from flashlive.engine import FinishCause
from flashlive.generation.decode import CallWatch, Chain, HoldBack, OutputPath
from flashlive.generation.prompt import TOOL_CALL_OPEN
from flashlive.generation.text import StopMatcher, WhitespaceTrim


def feed_all(path: OutputPath, pieces: list[str]) -> str:
    out = ""
    for i, piece in enumerate(pieces):
        out += path.feed(piece, last=i == len(pieces) - 1)
        if path.done:
            break
    return out


def test_hold_back_lets_nothing_through_and_keeps_it_all() -> None:
    hold = HoldBack("<")
    assert hold.feed("a") == "" and hold.feed("b") == "" and hold.flush() == ""
    assert hold.text == "<ab" and not hold.done


def test_a_call_watch_is_done_once_a_call_begins_only_when_it_can_decode_one() -> None:
    watching = CallWatch("root ::= x")
    assert watching.feed("Let me see. ") == "Let me see. "
    assert not watching.done
    assert watching.feed(TOOL_CALL_OPEN + '{"na') == ""
    assert watching.done and watching.captured == TOOL_CALL_OPEN + '{"na'
    blind = CallWatch(None)  # a JSON-schema answer: a brace opens it, no call
    blind.feed('{"a": 1}')
    assert blind.captured == '{"a": 1}' and not blind.done


def test_whitespace_trim_flushes_nothing_but_keeps_what_is_pending() -> None:
    trim = WhitespaceTrim()
    assert trim.feed("  Hello ") == "Hello"
    assert trim.flush() == ""
    assert trim.feed("world") == " world"  # text after all comes after its space


def test_a_chain_flushes_the_filters_after_one_that_is_done() -> None:
    stops = StopMatcher(["STOP"])
    hold = HoldBack()
    chain = Chain([stops, hold])
    assert chain.feed("abc ST") == ""
    assert hold.text == "abc "  # "ST" may begin the stop sequence: held by the stop filter
    chain.feed("OP and more")
    assert chain.done and hold.text == "abc "  # nothing after the stop sequence


def test_a_chain_flushes_at_the_last_piece() -> None:
    stops = StopMatcher(["STOP"])
    chain = Chain([stops, WhitespaceTrim()])
    assert chain.feed("end ST") == "end"
    assert chain.feed("", last=True) == " ST"  # not a stop after all: released at the end
    assert not chain.done


def test_an_answer_stops_at_a_stop_sequence_and_ends_the_turn() -> None:
    path = OutputPath(("\nUser:",))
    assert feed_all(path, [" Paris.", "\nUs", "er: and", " more"]) == "Paris."
    assert path.done and path.raw is None
    assert path.cause(FinishCause.LENGTH, FinishCause.LENGTH) is FinishCause.END_OF_TURN


def test_the_engines_finish_is_the_cause_when_no_stop_sequence_came() -> None:
    path = OutputPath(("\nUser:",))
    assert feed_all(path, ["Hi", " there "]) == "Hi there"
    assert path.cause(FinishCause.END_OF_TURN, FinishCause.LENGTH) is FinishCause.END_OF_TURN
    assert path.cause(None, FinishCause.LENGTH) is FinishCause.LENGTH


def test_a_forced_call_is_held_back_whole_from_its_marker() -> None:
    path = OutputPath((), forced_call=True)
    assert feed_all(path, ['{"name": ', '"f", "arguments": {}}']) == ""
    assert path.raw == TOOL_CALL_OPEN + '{"name": "f", "arguments": {}}'


def test_an_enum_answer_is_held_back_without_a_marker() -> None:
    path = OutputPath((), enum_answer=True, capture_calls=True)
    assert feed_all(path, ['"re', 'd"']) == ""
    assert path.raw == '"red"' and path.calls is None and not path.call_begun


def test_a_free_answer_that_begins_a_call_ends_the_first_pass() -> None:
    path = OutputPath(("\nUser:",), capture_calls=True, call_grammar="root ::= x")
    assert feed_all(path, ["Checking.", " <tool_call>", "{", "never seen"]) == "Checking."
    assert path.call_begun and path.raw == "<tool_call>"
