"""The Live session core, without I/O: events in, actions out.

`SessionCore` is a plain class. Its driver feeds it what happened (a client frame and its
parsed message, a VAD event, a transcribed utterance, a turn taken, answered or over, the time)
and runs the actions it returns (`live/actions.py`). Every decision of the session is made here:
what a client message may do in the current state, barge-in, whether a speculative draft is kept,
window cuts, resumption saves, the goAway deadline, and the typed error each close carries.

    AWAITING_SETUP ──setup──► SETTING_UP ──setup_ready──► ACTIVE ──deadline──► CLOSING
          │                        │                        │                    │
          └────────── any close ───┴────────────────────────┴────────────────────┴──► CLOSED

Errors raised by the pure pieces it uses (`Conversation`, `Window`, the blob and MIME parsers)
become a `Close` with that error; nothing else escapes, so a malformed client event always ends
in the documented close.
"""

from __future__ import annotations

import enum
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass

from flashlive.errors import (
    DeadlineExceeded,
    FailedPrecondition,
    FlashliveError,
    InvalidArgument,
    PayloadTooLarge,
    PermissionDenied,
)
from flashlive.live.actions import (
    Action,
    AnnounceHandle,
    Answer,
    AwaitTurn,
    BeginSetup,
    CancelDraft,
    Close,
    DropSpeculation,
    Emit,
    FinishUtterance,
    Interrupt,
    PrefillContext,
    QueueTurn,
    Save,
    StartSpeculation,
    StopWarming,
    TurnHandle,
)
from flashlive.live.frames import UserTurn, user_text
from flashlive.live.inputs import RealtimeReader
from flashlive.live.services import LiveLimits
from flashlive.live.session import Conversation, LiveConfig, Window
from flashlive.perception.audio import INPUT_RATE
from flashlive.perception.vad import (
    SpeechEnded,
    SpeechPaused,
    SpeechResumed,
    SpeechStarted,
    VadEvent,
)
from flashlive.protocol.content import Content, FunctionCall, Part, Role
from flashlive.protocol.decisions import first_refusal
from flashlive.protocol.live import (
    ClientContent,
    ClientMessage,
    GoAway,
    RealtimeInput,
    ServerContent,
    ServerMessage,
    SetupComplete,
    ToolCallCancellation,
)

log = logging.getLogger(__name__)


class State(enum.Enum):
    AWAITING_SETUP = "awaiting setup"  # connected; the first message must be the setup
    SETTING_UP = "setting up"  # the setup is being opened: resumed, models loaded
    ACTIVE = "active"  # serving turns
    CLOSING = "closing"  # at its deadline: the answer being sent may finish, then it closes
    CLOSED = "closed"  # a Close was returned: every later event is ignored


@dataclass(frozen=True)
class Opened:
    """What opening the setup produced, as the core needs it."""

    config: LiveConfig
    window: Window
    conversation: Conversation
    resumable: bool = False
    resumed: bool = False
    token_left_s: float | None = None  # seconds until the ephemeral token expires


class SessionCore:
    def __init__(
        self,
        session_id: str,
        limits: LiveLimits,
        *,
        now: float,
        key_hash: str = "",
        vision: bool = False,
        quota: Callable[[str], None] | None = None,
    ) -> None:
        self.id = session_id
        self.limits = limits
        self.key_hash = key_hash
        self.quota = quota
        self.vision = vision
        self.state = State.AWAITING_SETUP
        self.opened_at = now
        self.config: LiveConfig | None = None
        self.window: Window | None = None
        self.conversation = Conversation()
        self.resumable = False
        self.history_open = False  # historyConfig: the client is still sending the history
        self.active: TurnHandle | None = None  # the committed turn being answered or played
        self.speculating: int | None = None  # the sample a speculative draft's audio ends at
        self.waiting = 0  # user turns queued for the model
        self.speaking = False  # the VAD hears the user (automatic activity detection)
        self.in_activity = False  # between activityStart and activityEnd (manual)
        self.reader: RealtimeReader | None = None
        self.samples_in = 0  # 16 kHz samples the listener has taken: the session's audio clock
        self.ends = math.inf  # when the connection must close (monotonic seconds)
        self.ends_why: FlashliveError | None = None
        self.go_away_sent = False
        self.close_error: FlashliveError | None = None

    @property
    def conf(self) -> LiveConfig:
        assert self.config is not None, "no setup is in force yet"
        return self.config

    # --- lifecycle ------------------------------------------------------------------------

    def close(self, error: FlashliveError | None) -> list[Action]:
        if self.state is State.CLOSED:
            return []
        self.state = State.CLOSED
        self.close_error = error
        return [Close(error)]

    def ended(self) -> None:
        """The driver has stopped, whatever stopped it: nothing more is acted on."""
        self.state = State.CLOSED

    def client_gone(self) -> list[Action]:
        return self.close(None)

    def failed(self, error: FlashliveError) -> list[Action]:
        """Something the driver ran failed (the store, a model, a turn): the session ends."""
        return self.close(error)

    def setup_ready(self, opened: Opened, now: float) -> list[Action]:
        if self.state is not State.SETTING_UP:
            return []
        self.config = opened.config
        self.window = opened.window
        self.conversation = opened.conversation
        self.resumable = opened.resumable
        self.history_open = opened.config.initial_history and not opened.resumed
        self.reader = RealtimeReader(opened.config, vision=self.vision)
        self._schedule(opened.token_left_s, now)
        self.state = State.ACTIVE
        actions: list[Action] = [
            Emit(ServerMessage(setup_complete=SetupComplete(session_id=self.id)))
        ]
        if self.resumable:
            actions.append(AnnounceHandle())
        if self.conversation.answer_owed:
            # Resumed after a drop between a user turn and its answer: answer it now.
            actions += self._guarded(lambda out: self._user_turn(UserTurn(None), out))
        return actions

    def taken_over(self, failure: FlashliveError | None) -> list[Action]:
        return self.close(
            failure or FailedPrecondition("this session was resumed on another connection")
        )

    # --- time -----------------------------------------------------------------------------

    def _schedule(self, token_left_s: float | None, now: float) -> None:
        limits = self.limits
        self.ends_why = DeadlineExceeded(
            f"the connection reached its {limits.max_connection_s:g} s limit; resume with the "
            "last sessionResumptionUpdate handle"
        )
        if limits.max_connection_s > 0:
            self.ends = self.opened_at + limits.max_connection_s
        if token_left_s is not None and now + token_left_s < self.ends:
            self.ends = now + token_left_s
            self.ends_why = PermissionDenied("the ephemeral token of this session has expired")

    def next_wakeup(self) -> float | None:
        """When `tick` next has something to do (monotonic seconds), or None."""
        if self.state is State.AWAITING_SETUP:
            return self.opened_at + self.limits.setup_timeout_s
        if self.state is not State.ACTIVE or self.ends == math.inf:
            return None
        if not self.go_away_sent:
            return max(self.ends - self.limits.goaway_notice_s, self.opened_at)
        return self.ends

    def tick(self, now: float) -> list[Action]:
        wake = self.next_wakeup()
        if wake is None or now < wake:
            return []
        if self.state is State.AWAITING_SETUP:
            waited = self.limits.setup_timeout_s
            return self.close(FailedPrecondition(f"no setup arrived within {waited:g} s"))
        if not self.go_away_sent:
            self.go_away_sent = True
            left = max(self.ends - now, 0.0)
            return [Emit(ServerMessage(go_away=GoAway(time_left=duration(left))))]
        return self._deadline_reached()

    def _deadline_reached(self) -> list[Action]:
        why = self.ends_why
        assert why is not None
        self.state = State.CLOSING
        actions: list[Action] = []
        if self.active is not None and isinstance(why, DeadlineExceeded):
            # An answer being sent finishes first; one not yet started is saved, owed.
            actions.append(AwaitTurn(self.active, self.limits.goaway_notice_s))
        if self.resumable:
            actions.append(Save())
        return actions + self.close(why)

    # --- client frames --------------------------------------------------------------------

    def frame_received(self, size: int) -> list[Action]:
        """A frame of `size` bytes arrived; its message comes next (`message` / `malformed`)."""
        limit = self.limits.max_frame_bytes
        if size > limit:
            return self.close(
                PayloadTooLarge(f"a frame of {size} bytes exceeds the {limit}-byte limit")
            )
        return []

    def malformed(self, error: InvalidArgument) -> list[Action]:
        if self.state is State.AWAITING_SETUP:
            reason = error.message.split(". ", 1)[-1]
            return self.close(FailedPrecondition("invalid setup: " + reason))
        return self.close(error)

    def message(self, message: ClientMessage) -> list[Action]:
        if self.state is State.AWAITING_SETUP:
            if message.setup is None:
                return self.close(
                    FailedPrecondition(f"the first message must be setup, not {message.kind}")
                )
            self.state = State.SETTING_UP
            return [BeginSetup(message.setup)]
        if self.state is State.SETTING_UP:
            raise RuntimeError("the driver reads no client message while the setup is opened")
        if self.state is not State.ACTIVE:
            return []  # closing: what the client sends now is not acted on
        return self._guarded(lambda out: self._active_message(message, out))

    def _guarded(self, step: Callable[[list[Action]], None]) -> list[Action]:
        """Run one step; what it asked for before an error still happens, then the close."""
        out: list[Action] = []
        try:
            step(out)
        except FlashliveError as exc:
            return out + self.close(exc)
        return out

    def _active_message(self, message: ClientMessage, out: list[Action]) -> None:
        if message.setup is not None:
            raise FailedPrecondition("setup may be sent only once, as the first message")
        if (refusal := first_refusal(message)) is not None:
            raise InvalidArgument(refusal)
        if message.client_content is not None:
            self._client_content(message.client_content, out)
        elif message.tool_response is not None:
            answer = self.conversation.answer_calls(message.tool_response.function_responses)
            self._user_turn(UserTurn(answer, answers_tools=True), out)
        elif message.realtime_input is not None:
            self._realtime_input(message.realtime_input, out)

    def _client_content(self, content: ClientContent, out: list[Action]) -> None:
        self.conversation.add_client_turns(content.turns or [])
        if self.history_open:
            if content.turn_complete:  # the initial history is all here: nothing to answer
                self.history_open = False
                self.conversation.commit_history(self.window)
            out += self._save_soon()
            return
        if not content.turn_complete and content.turns:
            out += self._save_soon()  # context given ahead of its turn is part of the session
        if content.turn_complete:
            if not self.conversation.pending:
                raise InvalidArgument("clientContent.turnComplete with no turns to answer")
            self._barge_in(out)
            self._user_turn(UserTurn(None), out)

    def _realtime_input(self, given: RealtimeInput, out: list[Action]) -> None:
        assert self.reader is not None
        if self.history_open:
            raise FailedPrecondition(
                "historyConfig.initialHistoryInClientContent: send the history as clientContent, "
                "ending with turnComplete, before any realtimeInput"
            )
        if given.text is not None and given.text.strip():
            self._barge_in(out)
            self._user_turn(UserTurn(user_text(given.text), transcript=None), out)
        at_s = self.samples_in / INPUT_RATE
        self.reader.media(given, out, user_active=self._user_active(), at_s=at_s)

    def _save_soon(self) -> list[Action]:
        return [Save(soon=True)] if self.resumable else []

    def _user_active(self) -> bool:
        """Whether the user is speaking now: by the VAD, or between their activity signals."""
        return self.speaking if self.conf.automatic_activity else self.in_activity

    # --- turns ----------------------------------------------------------------------------

    def _user_turn(self, turn: UserTurn, out: list[Action]) -> None:
        if self.quota is not None:
            # Over quota ends the session (1013, with the wait in the reason): a socket has no
            # per-message error, and answering anyway would overspend.
            self.quota(self.key_hash)
        if self.waiting >= self.limits.turn_queue_size:
            raise FailedPrecondition(
                f"{self.limits.turn_queue_size} turns are already waiting for an answer"
            )
        self.waiting += 1
        out.append(QueueTurn(turn))

    def utterance(self, turn: UserTurn) -> list[Action]:
        """An utterance became a user turn (transcribed, or from its speculative draft)."""
        if self.state is not State.ACTIVE:
            return []
        return self._guarded(lambda out: self._user_turn(turn, out))

    def take_turn(self, pending: UserTurn) -> list[Action]:
        """The model is free for the next user turn: make it history and answer it."""
        self.waiting = max(self.waiting - 1, 0)
        if self.state is not State.ACTIVE:
            return []
        return self._guarded(lambda out: self._commit(pending, out))

    def _commit(self, pending: UserTurn, out: list[Action]) -> None:
        draft = pending.draft
        if draft is not None and draft.version != self.conversation.version:
            out.append(CancelDraft(draft))  # history moved on while it was drafted
            draft = None
        dropped = self.conversation.commit_user(pending.user, self.window)
        if dropped:
            self._log_slide(dropped)
            if draft is not None:  # drafted on the longer context: answer on the one kept
                out.append(CancelDraft(draft))
                draft = None
        out.append(Answer(pending, draft))

    def turn_started(self, turn: TurnHandle) -> list[Action]:
        """`turn` is the committed answer now; the user's turn is saved before any of it."""
        self.active = turn
        return [Save()] if self.resumable else []

    def answer_sent(self, text: str, calls: list[FunctionCall]) -> list[Action]:
        """The whole answer has been handed to the outbox: it is history now.

        Between turns the window slides if it is due, and the shorter context is computed
        while the engine is otherwise idle, so the next turn does not wait for it.
        """
        self.conversation.record_model(text, calls)
        actions: list[Action] = []
        if self.window is not None:
            dropped = self.conversation.keep_within(self.window)
            if dropped:
                self._log_slide(dropped)
                actions.append(PrefillContext(self.conversation.version))
        if self.resumable:
            actions += [Save(), AnnounceHandle()]
        return actions

    def turn_over(self, turn: TurnHandle) -> None:
        if self.active is turn:
            self.active = None

    def _log_slide(self, dropped: int) -> None:
        log.info(
            "live session %s: the sliding window dropped %d turns; %d tokens remain",
            self.id,
            dropped,
            self.conversation.tokens,
        )

    def _barge_in(self, out: list[Action]) -> None:
        """The user started a new turn: stop the model's answer, keep what was heard of it."""
        if not self.conf.interrupts:
            return
        turn = self.active
        if turn is not None and not turn.interrupted:
            self.active = None
            turn.interrupted = True
            heard = turn.heard()
            out.append(Interrupt(turn))
            if turn.sent_all:  # recorded whole, but the user cut in while it was playing
                self.conversation.replace_last_model(heard)
            else:
                self.conversation.record_model(heard, [])
            log.info("live session %s: interrupted; kept %d chars heard", self.id, len(heard))
            interrupted = ServerMessage(server_content=ServerContent(interrupted=True))
            out.append(Emit(interrupted, soon=True))
            out += self._save_soon()
        ids = self.conversation.cancel_calls()
        if ids:
            cancellation = ToolCallCancellation(ids=ids)
            out.append(Emit(ServerMessage(tool_call_cancellation=cancellation), soon=True))
            out += self._save_soon()

    # --- listening ------------------------------------------------------------------------

    def vad_event(self, event: VadEvent) -> list[Action]:
        if self.state is not State.ACTIVE:
            return []
        if isinstance(event, SpeechStarted):
            self.speaking = True
            out = self._drop_speculation()
            self._barge_in(out)
            return out
        if isinstance(event, SpeechPaused):
            actions: list[Action] = [StopWarming()]
            if self.active is None and self.waiting == 0:
                self.speculating = event.sample
                actions.append(StartSpeculation(event.sample, event.audio))
            return actions
        if isinstance(event, SpeechResumed):
            return self._drop_speculation()
        assert isinstance(event, SpeechEnded)
        self.speaking = False
        keep = self.speculating is not None and self.speculating == event.sample
        actions = [StopWarming()]
        if self.speculating is not None and not keep:
            actions.append(DropSpeculation())
        self.speculating = None
        return [*actions, FinishUtterance(event.audio, keep_speculation=keep)]

    def _drop_speculation(self) -> list[Action]:
        if self.speculating is None:
            return []
        self.speculating = None
        return [DropSpeculation()]

    def may_warm(self) -> bool:
        """Whether the words heard so far may be prefilled now: nothing else is under way."""
        return (
            self.state is State.ACTIVE
            and self.speaking
            and self.active is None
            and self.speculating is None
        )

    def activity_start(self) -> list[Action]:
        if self.state is not State.ACTIVE:
            return []
        out: list[Action] = []
        self._barge_in(out)
        self.in_activity = True
        return out

    def activity_end(self) -> None:
        self.in_activity = False


def duration(seconds: float) -> str:
    """A protobuf Duration in its JSON form, e.g. "9.5s"."""
    return f"{round(seconds, 3):g}s"


def contents_to_count(message: ClientMessage) -> list[Content]:
    """The entries a message may add to the history: counted ahead, off the event loop."""
    if message.client_content is not None:
        return list(message.client_content.turns or [])
    if message.tool_response is not None:
        responses = message.tool_response.function_responses or []
        return [Content(role=Role.USER, parts=[Part(function_response=r) for r in responses])]
    given = message.realtime_input
    if given is not None and given.text is not None and given.text.strip():
        return [user_text(given.text)]
    return []
