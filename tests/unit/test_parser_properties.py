"""Properties of the parsers of client and stored bytes: base64 fields and saved sessions.

Each either gives back what was encoded, or fails with the one error its caller maps (a
ValueError, an InvalidArgument naming the field): never another exception.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flashlive.errors import InvalidArgument
from flashlive.live.session import Conversation, SavedSession
from flashlive.protocol.base import blob_bytes, decode_base64
from flashlive.protocol.content import Content, Part, Role
from flashlive.protocol.live import Setup

CASES = settings(max_examples=300, suppress_health_check=list(HealthCheck), deadline=None)


@CASES
@given(data=st.binary(max_size=300))
def test_either_alphabet_padded_or_not_gives_the_bytes_back(data: bytes) -> None:
    standard = base64.b64encode(data).decode()
    url_safe = base64.urlsafe_b64encode(data).decode()
    for text in (standard, url_safe, standard.rstrip("="), url_safe.rstrip("=")):
        assert decode_base64(text) == data


@CASES
@given(text=st.text(max_size=60) | st.text("ABCab01+/-_=", max_size=60))
def test_any_text_is_bytes_or_an_invalid_argument_naming_the_field(text: str) -> None:
    try:
        blob_bytes(text, "parts[3].inlineData.data")
    except InvalidArgument as exc:
        assert exc.message == "parts[3].inlineData.data is not valid base64"


def a_saved_session() -> bytes:
    conversation = Conversation()
    conversation.commit_user(Content(role=Role.USER, parts=[Part(text="hello")]))
    conversation.record_model("hi", [])
    setup = Setup.model_validate({"model": "models/gemma-3-270m"})
    return SavedSession("k", setup, conversation.state()).to_bytes()


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=12,
)
PATHS = [
    ("v",),
    ("keyHash",),
    ("setup",),
    ("setup", "model"),
    ("conversation",),
    ("conversation", "history"),
    ("conversation", "pending"),
    ("conversation", "openCalls"),
    ("conversation", "answerOwed"),
    ("conversation", "droppedTurns"),
]


def replaced(state: dict[str, Any], path: tuple[str, ...], value: Any) -> dict[str, Any]:
    node = state
    for name in path[:-1]:
        node = node[name]
    node[path[-1]] = value
    return state


def restore(raw: bytes) -> None:
    """What resuming does with stored bytes: ValueError is the one failure it maps."""
    try:
        saved = SavedSession.from_bytes(raw)
        Conversation.from_state(saved.conversation)
    except ValueError:
        pass


@CASES
@given(path=st.sampled_from(PATHS), value=json_values)
def test_a_saved_session_with_any_field_replaced_restores_or_is_a_value_error(
    path: tuple[str, ...], value: Any
) -> None:
    state = replaced(json.loads(a_saved_session()), path, value)
    restore(json.dumps(state).encode())


@CASES
@given(cut=st.integers(0, 400), flips=st.lists(st.tuples(st.integers(0, 400), st.integers(0, 255))))
def test_a_truncated_or_corrupted_saved_session_restores_or_is_a_value_error(
    cut: int, flips: list[tuple[int, int]]
) -> None:
    raw = bytearray(a_saved_session()[:cut] if cut else a_saved_session())
    for at, byte in flips:
        if raw:
            raw[at % len(raw)] = byte
    restore(bytes(raw))


@pytest.mark.parametrize(
    "raw",
    [
        b'{"v":1,"keyHash":"k","setup":{"model":"m"},"conversation":'
        b'{"history":[],"pending":[],"openCalls":{},"answerOwed":false,"droppedTurns":1e400}}',
        b"[" * 100_000 + b"]" * 100_000,
    ],
    ids=["an infinite count", "deep nesting"],
)
def test_hostile_saved_sessions_are_value_errors(raw: bytes) -> None:
    with pytest.raises(ValueError):
        saved = SavedSession.from_bytes(raw)
        Conversation.from_state(saved.conversation)
