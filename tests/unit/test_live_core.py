"""The Live session core without asyncio, sockets or models: every state, every close, every
decision the driver only carries out (barge-in, drafts, window cuts, resumption, goAway)."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest

from flashlive.api.errors import close_code
from flashlive.errors import (
    DeadlineExceeded,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
)
from flashlive.live import actions as act
from flashlive.live.core import Opened, SessionCore, State, contents_to_count
from flashlive.live.frames import ACTIVITY_START, FLUSH, UserTurn, user_text
from flashlive.live.resumption import check_saved, store_key
from flashlive.live.services import LiveLimits
from flashlive.live.session import Conversation, LiveConfig, SavedSession, Window
from flashlive.perception.vad import SpeechEnded, SpeechPaused, SpeechResumed, SpeechStarted
from flashlive.protocol.content import Content, FunctionCall, Part, Role
from flashlive.protocol.live import ClientMessage, Setup, parse_client_message

AUDIO = np.zeros(160, dtype=np.float32)


@dataclass
class FakeTurn:
    said: str = ""
    interrupted: bool = False
    sent_all: bool = False
    version: int = 0

    def heard(self) -> str:
        return self.said


def words(content: Content) -> int:
    return sum(len((p.text or "").split()) for p in content.parts)


def new_core(**limits: Any) -> SessionCore:
    quota = limits.pop("quota", None)
    vision = limits.pop("vision", False)
    return SessionCore("s1", LiveLimits(**limits), now=0.0, vision=vision, quota=quota)


def feed(core: SessionCore, frame: str | bytes | dict[str, Any]) -> list[act.Action]:
    """One client frame, as the driver hands it over: its size, then its message."""
    raw = json.dumps(frame) if isinstance(frame, dict) else frame
    out = core.frame_received(len(raw))
    if out:
        return out
    try:
        message = parse_client_message(raw)
    except InvalidArgument as exc:
        return core.malformed(exc)
    return core.message(message)


def active(
    setup: dict[str, Any] | None = None,
    *,
    window: Window | None = None,
    conversation: Conversation | None = None,
    resumed: bool = False,
    token_left_s: float | None = None,
    **limits: Any,
) -> tuple[SessionCore, list[act.Action]]:
    core = new_core(**limits)
    begin = feed(core, {"setup": {"model": "models/m", **(setup or {})}})
    assert [type(a) for a in begin] == [act.BeginSetup] and core.state is State.SETTING_UP
    assert isinstance(begin[0], act.BeginSetup)
    config = LiveConfig.from_setup(begin[0].setup)
    opened = Opened(
        config,
        window or Window(10_000),
        conversation or Conversation(count=words),
        resumable=config.resumable,
        resumed=resumed,
        token_left_s=token_left_s,
    )
    return core, core.setup_ready(opened, now=0.0)


def state_of(core: SessionCore) -> State:
    return core.state  # read anew: a call may have moved it on


def closed_with(actions: list[act.Action]) -> Any:
    assert actions and isinstance(actions[-1], act.Close), actions
    return actions[-1].error


def code_of(actions: list[act.Action]) -> int:
    error = closed_with(actions)
    assert error is not None
    return close_code(error)


def of(kind: type[Any], actions: list[act.Action]) -> list[Any]:
    return [a for a in actions if isinstance(a, kind)]


def text(words_: str) -> dict[str, Any]:
    return {"realtimeInput": {"text": words_}}


def pcm(mime: str = "audio/pcm;rate=16000", data: bytes = b"\x00\x01" * 800) -> dict[str, Any]:
    return {"realtimeInput": {"audio": {"mimeType": mime, "data": base64.b64encode(data).decode()}}}


def answering(core: SessionCore, said: str = "", version: int | None = None) -> FakeTurn:
    """Take the queued turn and start answering it, as the turn loop does."""
    turn = FakeTurn(said)
    answer = of(act.Answer, core.take_turn(UserTurn(user_text("hi"))))
    assert answer
    core.turn_started(turn)
    turn.version = core.conversation.version if version is None else version
    return turn


# --- states -----------------------------------------------------------------------------


def test_the_states_run_setup_active_closed_and_nothing_is_acted_on_after_the_close() -> None:
    core = new_core()
    assert core.state is State.AWAITING_SETUP
    core, ready = active()
    assert core.state is State.ACTIVE
    assert [type(a) for a in ready] == [act.Emit]
    assert ready[0].message.setup_complete.session_id == "s1"  # type: ignore[union-attr]
    assert closed_with(core.client_gone()) is None and state_of(core) is State.CLOSED
    assert feed(core, text("hello")) == []
    assert core.tick(1e9) == [] and core.vad_event(SpeechStarted(0)) == []
    assert core.client_gone() == []  # one close only


def test_a_failure_while_setting_up_closes_with_its_error() -> None:
    core = new_core()
    feed(core, {"setup": {"model": "models/nope"}})
    assert code_of(core.failed(NotFound("models/nope is not found"))) == 1008
    assert core.state is State.CLOSED


def test_no_setup_in_time_closes_1008_with_the_wait_in_the_reason() -> None:
    core = new_core(setup_timeout_s=10.0)
    assert core.next_wakeup() == 10.0
    assert core.tick(9.99) == []
    error = closed_with(core.tick(10.0))
    assert isinstance(error, FailedPrecondition) and close_code(error) == 1008
    assert error.message == "no setup arrived within 10 s"


def test_a_first_message_that_is_not_a_setup_closes_1008() -> None:
    core = new_core()
    error = closed_with(feed(core, text("hi")))
    assert close_code(error) == 1008
    assert error.message == "the first message must be setup, not realtime_input"


def test_bad_json_closes_1008_in_the_setup_and_1007_after_it() -> None:
    core = new_core()
    error = closed_with(feed(core, "{not json"))
    assert close_code(error) == 1008 and error.message.startswith("invalid setup: ")
    core, _ = active()
    assert code_of(feed(core, "{not json")) == 1007


def test_a_second_setup_closes_1008() -> None:
    core, _ = active()
    error = closed_with(feed(core, {"setup": {"model": "models/m"}}))
    assert close_code(error) == 1008 and "only once" in error.message


def test_an_oversize_frame_closes_1009_before_it_is_parsed() -> None:
    core, _ = active(max_frame_bytes=100)
    assert code_of(core.frame_received(101)) == 1009
    core, _ = active(max_frame_bytes=100)
    assert core.frame_received(100) == []


@pytest.mark.parametrize(
    ("frame", "code", "says"),
    [
        ({"clientContent": {"turnComplete": True}}, 1007, "no turns to answer"),
        (
            {"clientContent": {"turns": [{"parts": [{"fileData": {"fileUri": "gs://x"}}]}]}},
            1007,
            "fileData",
        ),
        ({"clientContent": {"turns": [{"parts": []}], "turnComplete": True}}, 1007, "no parts"),
        ({"realtimeInput": {"activityStart": {}}}, 1008, "automaticActivityDetection.disabled"),
        (pcm(mime="audio/pcm;rate=٤٤١٠٠"), 1007, "realtimeInput.audio"),
        (pcm(mime="audio/wav"), 1007, "realtimeInput.audio"),
        (
            {"realtimeInput": {"audio": {"mimeType": "audio/pcm", "data": "***"}}},
            1007,
            "realtimeInput.audio.data is not valid base64",
        ),
        (
            {"realtimeInput": {"video": {"mimeType": "image/jpeg", "data": "AAAA"}}},
            1007,
            "no vision stage",
        ),
        (
            {"toolResponse": {"functionResponses": [{"id": "x", "name": "f", "response": {}}]}},
            1007,
            "does not answer a function call",
        ),
    ],
)
def test_each_bad_payload_closes_with_its_documented_code(
    frame: dict[str, Any], code: int, says: str
) -> None:
    core, _ = active()
    error = closed_with(feed(core, frame))
    assert close_code(error) == code and says in error.message


def test_an_image_type_the_server_does_not_read_closes_1007() -> None:
    core, _ = active(vision=True)
    frame = {"realtimeInput": {"video": {"mimeType": "image/tiff", "data": "AAAA"}}}
    error = closed_with(feed(core, frame))
    assert close_code(error) == 1007 and "image/tiff" in error.message
    core, _ = active(vision=True)
    frame["realtimeInput"]["video"]["mimeType"] = "image/png"
    shown = of(act.ShowFrame, feed(core, frame))
    assert shown and shown[0].frame.mime == "image/png"


def test_what_came_before_a_bad_part_of_a_message_still_happens() -> None:
    core, _ = active()
    frame = {"realtimeInput": {"text": "hi", "audio": {"mimeType": "audio/wav", "data": ""}}}
    actions = feed(core, frame)
    assert of(act.QueueTurn, actions) and code_of(actions) == 1007


def test_realtime_input_while_the_initial_history_is_open_closes_1008() -> None:
    core, _ = active({"historyConfig": {"initialHistoryInClientContent": True}})
    assert core.history_open
    assert code_of(feed(core, text("hi"))) == 1008


def test_the_initial_history_is_kept_not_answered_then_turns_are_answered() -> None:
    core, _ = active({"historyConfig": {"initialHistoryInClientContent": True}})
    history = {"turns": [{"role": "user", "parts": [{"text": "earlier"}]}], "turnComplete": True}
    assert of(act.QueueTurn, feed(core, {"clientContent": history})) == []
    assert not core.history_open and len(core.conversation.history) == 1
    assert of(act.QueueTurn, feed(core, text("now")))


def test_a_resumed_session_has_its_history_already() -> None:
    core, _ = active({"historyConfig": {"initialHistoryInClientContent": True}}, resumed=True)
    assert not core.history_open


def test_activity_signals_in_manual_mode_are_queued_in_order_with_the_audio() -> None:
    core, _ = active({"realtimeInputConfig": {"automaticActivityDetection": {"disabled": True}}})
    frame = pcm()
    frame["realtimeInput"]["activityStart"] = {}
    frame["realtimeInput"]["audioStreamEnd"] = True
    actions = feed(core, frame)
    kinds = [type(a) for a in actions]
    assert kinds == [act.QueueAudio, act.QueueMark, act.QueueMark]
    assert [a.mark for a in of(act.QueueMark, actions)] == [FLUSH, ACTIVITY_START]


def test_audio_at_another_rate_is_resampled_to_16_khz() -> None:
    core, _ = active()
    queued = [
        a.samples.size
        for _ in range(4)
        for a in of(act.QueueAudio, feed(core, pcm("audio/pcm;rate=8000", b"\x00\x01" * 800)))
    ]
    assert core.reader is not None and core.reader.resampler_rate == 8000
    # 800 samples at 8 kHz in each frame: about twice as many come out (the first is held back).
    assert queued and all(1500 <= n <= 1700 for n in queued)


# --- turns, quota ------------------------------------------------------------------------


def test_over_quota_closes_1013() -> None:
    def quota(key: str) -> None:
        raise ResourceExhausted("over quota; retry in 5 s")

    core, _ = active(quota=quota)
    assert code_of(feed(core, text("hi"))) == 1013


def test_more_waiting_turns_than_the_queue_holds_closes_1008() -> None:
    core, _ = active(turn_queue_size=2)
    assert of(act.QueueTurn, feed(core, text("one"))) and of(act.QueueTurn, feed(core, text("two")))
    error = closed_with(feed(core, text("three")))
    assert (
        close_code(error) == 1008 and error.message == "2 turns are already waiting for an answer"
    )


def test_a_full_context_without_compression_closes_1008() -> None:
    core, _ = active(window=Window(5))
    feed(core, text("one two three four five six seven"))
    error = closed_with(core.take_turn(UserTurn(user_text("one two three four five six seven"))))
    assert close_code(error) == 1008 and "contextWindowCompression" in error.message


# --- barge-in ----------------------------------------------------------------------------


def test_barge_in_cancels_the_answer_and_keeps_what_was_heard() -> None:
    core, _ = active()
    feed(core, text("tell me a story"))
    turn = answering(core, said="Once upon")
    actions = feed(core, text("stop"))
    assert of(act.Interrupt, actions) == [act.Interrupt(turn)]
    (emit,) = of(act.Emit, actions)
    assert emit.soon and emit.message.server_content.interrupted
    assert turn.interrupted and core.active is None
    assert core.conversation.history[-1] == Content(role=Role.MODEL, parts=[Part(text="Once upon")])
    assert of(act.QueueTurn, actions)


def test_barge_in_during_playback_replaces_the_whole_answer_with_what_was_heard() -> None:
    core, _ = active()
    feed(core, text("tell me a story"))
    turn = answering(core, said="Once")
    core.answer_sent("Once upon a time", [])
    turn.sent_all = True
    feed(core, text("stop"))
    model = [c for c in core.conversation.history if c.role is Role.MODEL]
    assert [c.parts[0].text for c in model] == ["Once"]


def test_no_interruption_lets_the_answer_go_on() -> None:
    core, _ = active({"realtimeInputConfig": {"activityHandling": "NO_INTERRUPTION"}})
    feed(core, text("tell me a story"))
    turn = answering(core)
    actions = feed(core, text("stop"))
    assert of(act.Interrupt, actions) == [] and not turn.interrupted and core.active is turn


def test_barge_in_cancels_the_open_tool_calls() -> None:
    core, _ = active()
    core.conversation.expect_calls([FunctionCall(id="c1", name="f", args={})])
    actions = feed(core, text("never mind"))
    (emit,) = of(act.Emit, actions)
    assert emit.message.tool_call_cancellation.ids == ["c1"]


def test_a_vad_onset_and_an_activity_start_barge_in_too() -> None:
    core, _ = active()
    feed(core, text("story"))
    turn = answering(core)
    assert of(act.Interrupt, core.vad_event(SpeechStarted(0))) and turn.interrupted
    core, _ = active({"realtimeInputConfig": {"automaticActivityDetection": {"disabled": True}}})
    feed(core, text("story"))
    turn = answering(core)
    assert of(act.Interrupt, core.activity_start()) and core.in_activity


# --- speculation ---------------------------------------------------------------------------


def test_a_draft_made_in_the_pause_is_kept_when_the_utterance_ends_there() -> None:
    core, _ = active()
    core.vad_event(SpeechStarted(0))
    started = core.vad_event(SpeechPaused(3200, AUDIO))
    assert of(act.StartSpeculation, started)[0].sample == 3200
    ended = core.vad_event(SpeechEnded(3200, AUDIO))
    assert of(act.DropSpeculation, ended) == []
    (finish,) = of(act.FinishUtterance, ended)
    assert finish.keep_speculation and core.speculating is None


def test_a_draft_is_dropped_when_the_user_speaks_again() -> None:
    core, _ = active()
    core.vad_event(SpeechStarted(0))
    core.vad_event(SpeechPaused(3200, AUDIO))
    assert of(act.DropSpeculation, core.vad_event(SpeechResumed(4000)))
    core.vad_event(SpeechPaused(6400, AUDIO))
    ended = core.vad_event(SpeechEnded(9600, AUDIO))  # ended later than the draft heard
    assert of(act.DropSpeculation, ended)
    assert not of(act.FinishUtterance, ended)[0].keep_speculation


def test_no_draft_while_an_answer_is_under_way_or_a_turn_waits() -> None:
    core, _ = active()
    feed(core, text("one"))  # waiting
    assert of(act.StartSpeculation, core.vad_event(SpeechPaused(100, AUDIO))) == []
    answering(core)
    assert of(act.StartSpeculation, core.vad_event(SpeechPaused(100, AUDIO))) == []


def test_warming_only_while_the_user_speaks_and_nothing_else_runs() -> None:
    core, _ = active()
    assert not core.may_warm()
    core.vad_event(SpeechStarted(0))
    assert core.may_warm()
    core.vad_event(SpeechPaused(100, AUDIO))
    assert not core.may_warm()


def test_a_stale_draft_is_cancelled_and_a_current_one_answers() -> None:
    core, _ = active()
    current = FakeTurn(version=core.conversation.version)
    feed(core, text("hi"))
    actions = core.take_turn(UserTurn(user_text("hi"), draft=current))  # type: ignore[arg-type]
    assert of(act.CancelDraft, actions) == [] and of(act.Answer, actions)[0].draft is current
    stale = FakeTurn(version=core.conversation.version - 1)
    feed(core, text("again"))
    actions = core.take_turn(UserTurn(user_text("again"), draft=stale))  # type: ignore[arg-type]
    assert of(act.CancelDraft, actions)[0].turn is stale
    assert of(act.Answer, actions)[0].draft is None


# --- the window ------------------------------------------------------------------------------


def test_a_window_cut_at_commit_cancels_the_draft_made_on_the_longer_context() -> None:
    window = Window(limit=100, trigger=20, target=10)
    history = [user_text("a b c d e f g h"), Content(role=Role.MODEL, parts=[Part(text="x y z")])]
    core, _ = active(window=window, conversation=Conversation(history=list(history), count=words))
    draft = FakeTurn(version=core.conversation.version)
    feed(core, text("one two three four five six seven eight nine ten"))
    actions = core.take_turn(
        UserTurn(user_text("one two three four five six seven eight nine ten"), draft=draft)  # type: ignore[arg-type]
    )
    assert of(act.CancelDraft, actions)[0].turn is draft
    assert core.conversation.dropped_turns == 1


def test_a_window_cut_between_turns_prefills_the_shorter_context() -> None:
    window = Window(limit=100, trigger=12, target=6)
    core, _ = active(window=window)
    feed(core, text("one two three four"))
    answering(core)
    actions = core.answer_sent("five six seven eight nine", [])
    feed(core, text("ten eleven twelve"))
    answering(core)
    actions = core.answer_sent("thirteen fourteen fifteen sixteen seventeen eighteen", [])
    (prefill,) = of(act.PrefillContext, actions)
    assert prefill.version == core.conversation.version and core.conversation.dropped_turns


# --- resumption ----------------------------------------------------------------------------


def test_a_resumable_session_announces_its_handle_and_saves_after_every_answer() -> None:
    core, ready = active({"sessionResumption": {}})
    assert [type(a) for a in ready] == [act.Emit, act.AnnounceHandle]
    feed(core, text("hi"))
    turn = answering(core)
    assert core.turn_started(turn) == [act.Save()]
    assert core.answer_sent("hello", []) == [act.Save(), act.AnnounceHandle()]
    assert of(act.Save, feed(core, {"clientContent": {"turns": [{"parts": [{"text": "x"}]}]}}))


def test_a_session_not_resumable_never_saves() -> None:
    core, ready = active()
    assert of(act.AnnounceHandle, ready) == []
    feed(core, text("hi"))
    assert core.turn_started(answering(core)) == [] and core.answer_sent("hello", []) == []


def test_a_resumed_session_owing_an_answer_answers_it_at_once() -> None:
    owed = Conversation(history=[user_text("hi")], answer_owed=True, count=words)
    _, ready = active({"sessionResumption": {}}, conversation=owed, resumed=True)
    (queued,) = of(act.QueueTurn, ready)
    assert queued.turn.user is None


def test_a_takeover_closes_1008_or_with_the_store_failure() -> None:
    core, _ = active({"sessionResumption": {}})
    error = closed_with(core.taken_over(None))
    assert close_code(error) == 1008 and "another connection" in error.message
    core, _ = active({"sessionResumption": {}})
    assert closed_with(core.taken_over(FailedPrecondition("x"))).message == "x"


def test_a_saved_session_resumes_only_for_its_key_and_model() -> None:
    setup = Setup.model_validate({"model": "models/m"})
    raw = SavedSession("key-a", setup, Conversation().state()).to_bytes()
    assert check_saved(raw, "key-a", setup, "s").key_hash == "key-a"
    with pytest.raises(FailedPrecondition, match="unknown or has expired"):
        check_saved(raw, "key-b", setup, "s")
    with pytest.raises(FailedPrecondition, match="runs models/m, not models/n"):
        check_saved(raw, "key-a", Setup.model_validate({"model": "models/n"}), "s")
    with pytest.raises(FailedPrecondition, match="unknown or has expired"):
        check_saved(b"{}", "key-a", setup, "s")
    assert store_key("h") != store_key("h2") and "h" not in store_key("h").split(":", 1)[1]


# --- time limits ---------------------------------------------------------------------------


def test_go_away_comes_first_then_the_close_is_a_clean_1000() -> None:
    core, _ = active(max_connection_s=60.0, goaway_notice_s=10.0)
    assert core.next_wakeup() == 50.0
    assert core.tick(49.0) == []
    (emit,) = core.tick(50.5)
    assert emit.message.go_away.time_left == "9.5s"  # type: ignore[union-attr]
    assert core.next_wakeup() == 60.0
    error = closed_with(core.tick(60.0))
    assert isinstance(error, DeadlineExceeded) and close_code(error) == 1000


def test_at_the_deadline_the_answer_being_sent_finishes_and_the_state_is_saved() -> None:
    core, _ = active({"sessionResumption": {}}, max_connection_s=60.0, goaway_notice_s=10.0)
    feed(core, text("hi"))
    turn = answering(core)
    core.tick(50.0)
    actions = core.tick(60.0)
    assert [type(a) for a in actions] == [act.AwaitTurn, act.Save, act.Close]
    assert actions[0] == act.AwaitTurn(turn, 10.0)


def test_an_expiring_token_closes_1008_before_the_connection_limit() -> None:
    core, _ = active(token_left_s=30.0, max_connection_s=600.0, goaway_notice_s=10.0)
    assert core.next_wakeup() == 20.0
    core.tick(20.0)
    error = closed_with(core.tick(30.0))
    assert isinstance(error, PermissionDenied) and close_code(error) == 1008
    assert "expired" in error.message


def test_a_token_session_does_not_wait_for_the_answer_at_its_expiry() -> None:
    core, _ = active(token_left_s=30.0, goaway_notice_s=10.0)
    feed(core, text("hi"))
    answering(core)
    core.tick(20.0)
    assert [type(a) for a in core.tick(30.0)] == [act.Close]


def test_without_limits_the_clock_never_wakes() -> None:
    core, _ = active()
    assert core.next_wakeup() is None and core.tick(1e12) == []


def test_what_a_message_adds_is_counted_ahead() -> None:
    tool = {"toolResponse": {"functionResponses": [{"id": "c", "name": "f", "response": {}}]}}
    counted = contents_to_count(ClientMessage.model_validate(tool))
    assert counted[0].parts[0].function_response is not None
    assert contents_to_count(ClientMessage.model_validate(text("  "))) == []
