"""The pure Live session core: setup decisions, conversation bookkeeping, what was heard."""

from __future__ import annotations

import pytest

from flashlive.errors import FailedPrecondition, InvalidArgument
from flashlive.live.session import (
    SPOKEN_STYLE,
    Conversation,
    LiveConfig,
    SavedSession,
    SpokenLog,
    Window,
)
from flashlive.protocol.content import Content, FunctionCall, FunctionResponse, Part, Role
from flashlive.protocol.generate import GenerateContentRequest
from flashlive.protocol.live import ContextWindowCompression, ResponseModality, Setup


def setup(**fields: object) -> Setup:
    return Setup.model_validate({"model": "models/m", **fields})


def user(text: str) -> Content:
    return Content(role=Role.USER, parts=[Part(text=text)])


def test_defaults_are_text_automatic_detection_and_interruptions() -> None:
    config = LiveConfig.from_setup(setup())
    assert config.model == "m"
    assert config.modality is ResponseModality.TEXT
    assert config.automatic_activity and config.interrupts
    assert not config.input_transcription and not config.output_transcription


def test_audio_answers_are_told_to_be_spoken_and_drop_speech_fields() -> None:
    config = LiveConfig.from_setup(
        setup(
            systemInstruction={"parts": [{"text": "You are Ada."}]},
            generationConfig={
                "responseModalities": ["audio"],
                "temperature": 0.3,
                "speechConfig": {"voiceConfig": {"prebuiltVoiceConfig": {"voiceName": "Puck"}}},
            },
        )
    )
    assert config.modality is ResponseModality.AUDIO
    system = config.base.system_instruction
    assert system is not None and [p.text for p in system.parts] == ["You are Ada.", SPOKEN_STYLE]
    generation = config.base.generation_config
    assert generation is not None and generation.temperature == 0.3
    assert generation.speech_config is None and generation.response_modalities is None


def test_manual_detection_and_no_interruption() -> None:
    config = LiveConfig.from_setup(
        setup(
            realtimeInputConfig={
                "automaticActivityDetection": {"disabled": True},
                "activityHandling": "NO_INTERRUPTION",
            }
        )
    )
    assert not config.automatic_activity and not config.interrupts


@pytest.mark.parametrize(
    "fields",
    [
        {"proactivity": {"proactiveAudio": True}},
        {"generationConfig": {"enableAffectiveDialog": True}},
    ],
)
def test_features_not_built_yet_are_refused_not_ignored(fields: dict[str, object]) -> None:
    with pytest.raises(FailedPrecondition, match="not supported"):
        LiveConfig.from_setup(setup(**fields))


def test_pending_client_turns_join_the_history_on_commit() -> None:
    conversation = Conversation()
    conversation.add_client_turns([Content(parts=[Part(text="a")])])
    base = GenerateContentRequest()
    request = conversation.request(base, user("b"))
    assert [c.parts[0].text for c in request.contents] == ["a", "b"]
    assert request.contents[0].role is Role.USER  # a turn without a role is the user's
    assert conversation.history == []
    conversation.commit_user(user("b"))
    assert [c.parts[0].text for c in conversation.history] == ["a", "b"]
    assert conversation.pending == []


def test_empty_client_turn_is_invalid() -> None:
    with pytest.raises(InvalidArgument, match=r"turns\[0\]"):
        Conversation().add_client_turns([Content(parts=[])])


def test_version_moves_with_every_change() -> None:
    conversation = Conversation()
    versions = [conversation.version]
    conversation.commit_user(user("q"))
    versions.append(conversation.version)
    conversation.record_model("a", [])
    versions.append(conversation.version)
    conversation.replace_last_model("partial")
    versions.append(conversation.version)
    assert versions == sorted(set(versions))
    assert conversation.history[-1].parts[0].text == "partial"


def test_barge_in_after_the_answer_keeps_only_what_was_heard() -> None:
    conversation = Conversation()
    conversation.commit_user(user("tell me a story"))
    conversation.record_model("Once upon a time there was a dragon.", [])
    conversation.replace_last_model("Once upon a time")
    assert [(c.role, c.parts[0].text) for c in conversation.history] == [
        (Role.USER, "tell me a story"),
        (Role.MODEL, "Once upon a time"),
    ]
    conversation.replace_last_model("")  # nothing was heard: the answer is gone
    assert [c.role for c in conversation.history] == [Role.USER]


def test_tool_responses_must_answer_open_calls() -> None:
    conversation = Conversation()
    call = FunctionCall(id="c1", name="f", args={})
    conversation.record_model("", [call])
    conversation.expect_calls([call])
    with pytest.raises(InvalidArgument, match="does not answer"):
        conversation.answer_calls([FunctionResponse(id="nope", name="f")])
    with pytest.raises(InvalidArgument, match="empty"):
        conversation.answer_calls([])
    answer = conversation.answer_calls([FunctionResponse(id="c1", name="f", response={"x": 1})])
    assert answer.role is Role.USER and answer.parts[0].function_response is not None
    assert conversation.open_calls == {}
    with pytest.raises(InvalidArgument):  # answered once only
        conversation.answer_calls([FunctionResponse(id="c1", name="f")])


def test_cancel_calls_returns_the_open_ids() -> None:
    conversation = Conversation()
    conversation.expect_calls([FunctionCall(id="a", name="f"), FunctionCall(id="b", name="g")])
    assert conversation.cancel_calls() == ["a", "b"]
    assert conversation.cancel_calls() == []


def test_heard_counts_clauses_that_started_playing() -> None:
    log = SpokenLog()
    log.add("One two.", 1.0)
    log.add("Three four.", 1.5)
    log.add("Five.", 0.5)
    assert log.seconds == 3.0
    assert log.heard(0.0) == "One two."
    assert log.heard(1.2) == "One two. Three four."
    assert log.heard(10) == "One two. Three four. Five."


def words(content: Content) -> int:
    return sum(len((p.text or "").split()) for p in content.parts)


def compression(trigger: int | None = None, target: int | None = None) -> ContextWindowCompression:
    window = {"targetTokens": target} if target is not None else {}
    return ContextWindowCompression.model_validate(
        {"triggerTokens": trigger, "slidingWindow": window}
    )


def test_window_defaults_follow_the_context() -> None:
    plain = Window.from_setup(None, context_size=1000, reserve=200)
    assert (plain.limit, plain.trigger) == (800, None)
    sliding = Window.from_setup(compression(), context_size=1000, reserve=200)
    assert (sliding.trigger, sliding.target) == (640, 320)  # 80% of the limit, then half
    given = Window.from_setup(compression(500, 100), context_size=1000, reserve=200)
    assert (given.trigger, given.target) == (500, 100)


@pytest.mark.parametrize(("trigger", "target"), [(400, 400), (400, 500)])
def test_a_target_not_below_the_trigger_is_refused(trigger: int, target: int) -> None:
    with pytest.raises(FailedPrecondition, match="below"):
        Window.from_setup(compression(trigger, target), context_size=1000, reserve=200)


@pytest.mark.parametrize(
    ("trigger", "target", "expected"),
    [(25600, 12800, (800, 400)), (25600, None, (800, 400)), (25600, 300, (800, 300))],
)
def test_a_window_sized_for_a_larger_context_is_scaled_to_this_one(
    trigger: int, target: int | None, expected: tuple[int, int]
) -> None:
    window = Window.from_setup(compression(trigger, target), context_size=1000, reserve=200)
    assert (window.trigger, window.target) == expected


def run_turns(conversation: Conversation, window: Window, turns: int) -> list[int]:
    dropped = []
    for i in range(turns):
        dropped.append(conversation.commit_user(user(f"question {i} " + "w " * 8), window))
        conversation.record_model(f"answer {i} " + "w " * 8, [])
    return dropped


def test_the_sliding_window_drops_oldest_whole_turns_down_to_the_target() -> None:
    conversation = Conversation(count=words, base_tokens=5)
    window = Window(limit=1000, trigger=100, target=50)
    dropped = run_turns(conversation, window, 40)  # 40 turns of 20 tokens: 16x the target
    assert conversation.tokens <= window.trigger
    assert conversation.dropped_turns == sum(dropped) > 0
    first = conversation.history[0]
    assert first.role is Role.USER and (first.parts[0].text or "").startswith("question")
    # The newest turns survive, in order.
    assert conversation.history[-1].parts[0].text == "answer 39 " + "w " * 8
    kept = [int((c.parts[0].text or "").split()[1]) for c in conversation.history[::2]]
    assert kept == list(range(40 - len(kept), 40))
    # Cuts are rare: between two cuts the context grows from the target back to the trigger.
    assert sum(1 for d in dropped if d) <= 40 * 20 // (window.trigger - window.target) + 1


def test_a_cut_never_splits_a_tool_call_from_its_result() -> None:
    conversation = Conversation(count=words)
    window = Window(limit=1000, trigger=30, target=10)
    call = FunctionCall(id="c1", name="f", args={})
    conversation.commit_user(user("one two three four five six"), window)
    conversation.record_model("", [call])
    result = Content(
        role=Role.USER,
        parts=[Part(function_response=FunctionResponse(id="c1", name="f", response={}))],
    )
    conversation.commit_user(result, window)
    conversation.record_model("seven eight nine ten", [])
    conversation.commit_user(user("a " * 30), window)
    assert [c.role for c in conversation.history] == [Role.USER]
    assert conversation.history[0].parts[0].text == "a " * 30  # the newest turn stays, long or not


def test_without_compression_a_full_context_is_refused_clearly() -> None:
    conversation = Conversation(count=words)
    window = Window(limit=50)
    conversation.commit_user(user("w " * 40), window)
    with pytest.raises(FailedPrecondition, match="context is full"):
        conversation.commit_user(user("w " * 20), window)


def test_answer_owed_until_the_model_answers() -> None:
    conversation = Conversation()
    conversation.commit_user(user("hi"))
    assert conversation.answer_owed
    conversation.record_model("hello", [])
    assert not conversation.answer_owed
    conversation.commit_user(user("and?"))
    conversation.replace_last_model("")
    assert not conversation.answer_owed


def test_saved_sessions_round_trip_exactly() -> None:
    conversation = Conversation(count=words)
    conversation.add_client_turns([user("context given ahead")])
    conversation.commit_user(user("hi there"))
    conversation.record_model("", [FunctionCall(id="c9", name="lookup", args={"q": "x"})])
    conversation.expect_calls([FunctionCall(id="c9", name="lookup", args={"q": "x"})])
    conversation.add_client_turns([user("later")])
    the_setup = setup(
        systemInstruction={"parts": [{"text": "Be brief."}]},
        sessionResumption={"handle": "secret"},
        contextWindowCompression={"triggerTokens": 100},
    )
    raw = SavedSession("k", the_setup, conversation.state()).to_bytes()
    assert b"secret" not in raw  # a handle is never stored in the state it names
    back = SavedSession.from_bytes(raw)
    restored = Conversation.from_state(back.conversation, words)
    assert restored.history == conversation.history
    assert restored.pending == conversation.pending
    assert restored.open_calls == {"c9": "lookup"}
    assert restored.tokens == conversation.tokens
    assert back.setup.system_instruction == the_setup.system_instruction
    assert back.setup.context_window_compression == the_setup.context_window_compression


@pytest.mark.parametrize("raw", [b"", b"{}", b'{"v": 2}', b'{"v": 1, "keyHash": "k"}', b"\xff"])
def test_a_damaged_saved_session_is_a_value_error(raw: bytes) -> None:
    with pytest.raises(ValueError, match="malformed"):
        SavedSession.from_bytes(raw)
