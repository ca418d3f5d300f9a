from flashlive.generation.text import MarkerSplit, StopMatcher, WhitespaceTrim


def feed_all(matcher: StopMatcher, pieces: list[str]) -> str:
    out = "".join(matcher.feed(p) for p in pieces)
    return out + matcher.flush()


def test_stop_sequence_split_across_pieces_is_excluded() -> None:
    matcher = StopMatcher(["END"])
    assert feed_all(matcher, ["one two E", "N", "D three"]) == "one two "
    assert matcher.stopped


def test_partial_stop_prefix_is_released_when_it_turns_out_not_to_match() -> None:
    matcher = StopMatcher(["END"])
    assert matcher.feed("EN") == ""
    assert matcher.feed("Z") == "ENZ"
    assert not matcher.stopped


def test_earliest_of_several_stop_sequences_wins() -> None:
    matcher = StopMatcher(["\nUser:", "3"])
    assert feed_all(matcher, ["1, 2, 3\nUser: hi"]) == "1, 2, "


def test_marker_split_captures_from_marker() -> None:
    split = MarkerSplit("<tool_call>")
    visible = split.feed("Let me check. <tool") + split.feed('_call>{"name": "f"}')
    assert visible == "Let me check. "
    assert split.captured == '<tool_call>{"name": "f"}'


def test_marker_split_captures_answers_that_open_like_json() -> None:
    split = MarkerSplit("<tool_call>", openers=("{", "```"))
    assert split.feed("  `") == ""
    assert split.feed('``json\n{"name"') == ""
    assert split.captured == '  ```json\n{"name"'


def test_marker_split_releases_plain_text() -> None:
    split = MarkerSplit("<tool_call>", openers=("{", "```"))
    assert split.feed("Paris is") == "Paris is"
    assert split.feed(" {nice}") == " {nice}"
    assert split.captured is None


def test_whitespace_trim_drops_leading_and_trailing() -> None:
    trim = WhitespaceTrim()
    out = "".join(trim.feed(p) for p in ["  \n", " Hello", " world", "\n", "\n"])
    assert out == "Hello world"
    assert trim.feed("again") == "\n\nagain"


def test_a_longer_stop_that_began_earlier_wins_over_a_later_short_one() -> None:
    matcher = StopMatcher(["X", "YXX"])
    assert matcher.feed("aYX") == "a"
    assert matcher.feed("X") == ""
    assert matcher.stopped


def test_flush_still_cuts_at_a_stop_inside_the_held_text() -> None:
    matcher = StopMatcher(["X", "YXX"])
    assert matcher.feed("aYX") == "a"
    assert matcher.flush() == "Y"
    assert matcher.stopped
