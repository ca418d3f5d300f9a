"""The pure Live session core: setup decisions, conversation bookkeeping, what was heard."""

from __future__ import annotations

import pytest

from flashlive.errors import FailedPrecondition, InvalidArgument
from flashlive.live.session import SPOKEN_STYLE, Conversation, LiveConfig, SpokenLog
from flashlive.protocol.content import Content, FunctionCall, FunctionResponse, Part, Role
from flashlive.protocol.generate import GenerateContentRequest
from flashlive.protocol.live import ResponseModality, Setup


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
        {"sessionResumption": {}},
        {"contextWindowCompression": {"triggerTokens": 10}},
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
