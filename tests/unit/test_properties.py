"""Property tests: the streaming filters and the request parser against arbitrary input."""

from __future__ import annotations

from itertools import pairwise
from typing import Any

from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from flashlive.api.errors import http_status
from flashlive.errors import invalid_from_validation
from flashlive.generation.text import MarkerSplit, StopMatcher
from flashlive.protocol.generate import GenerateContentRequest

alphabet = st.sampled_from("ab\nXY ")


def split_points(text: str, cuts: list[int]) -> list[str]:
    points = sorted({c % (len(text) + 1) for c in cuts})
    bounds = [0, *points, len(text)]
    return [text[a:b] for a, b in pairwise(bounds)]


@given(
    text=st.text(alphabet, max_size=40),
    stops=st.lists(st.text(alphabet, min_size=1, max_size=4), min_size=1, max_size=3),
    cuts=st.lists(st.integers(0, 1000), max_size=8),
)
def test_stop_matcher_streams_exactly_the_text_before_the_first_stop(
    text: str, stops: list[str], cuts: list[int]
) -> None:
    matcher = StopMatcher(stops)
    out = "".join(matcher.feed(piece) for piece in split_points(text, cuts)) + matcher.flush()
    hits = [i for i in (text.find(s) for s in stops) if i >= 0]
    assert out == (text[: min(hits)] if hits else text)
    assert matcher.stopped == bool(hits)


@given(text=st.text(alphabet, max_size=40), cuts=st.lists(st.integers(0, 1000), max_size=8))
def test_marker_split_loses_nothing(text: str, cuts: list[int]) -> None:
    split = MarkerSplit("XY")
    visible = "".join(split.feed(piece) for piece in split_points(text, cuts)) + split.flush()
    assert visible + (split.captured or "") == text
    assert "XY" not in visible


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=5),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=12,
)
request_like = st.fixed_dictionaries(
    {},
    optional={
        "contents": json_values,
        "generationConfig": json_values,
        "tools": json_values,
        "systemInstruction": json_values,
    },
)


@given(body=st.one_of(request_like, st.dictionaries(st.text(max_size=8), json_values, max_size=4)))
def test_any_json_object_parses_or_fails_with_a_readable_invalid_argument(
    body: dict[str, Any],
) -> None:
    try:
        GenerateContentRequest.model_validate(body)
    except ValidationError as exc:
        error = invalid_from_validation(exc)
        assert http_status(error) == 400 and error.message.startswith("Invalid JSON payload")
