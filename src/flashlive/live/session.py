"""The pure part of a Live session: what a setup means, and what the model has been told.

No I/O here. The asyncio driver (`live/driver.py`) owns sockets, tasks and models and asks
these classes what to do; the unit tests drive them directly.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from flashlive.errors import FailedPrecondition, InvalidArgument
from flashlive.generation.resolution import Resolution, resolution_of
from flashlive.live.activity import vad_settings
from flashlive.perception.vad import VadSettings
from flashlive.protocol.base import model_id
from flashlive.protocol.content import Content, FunctionCall, FunctionResponse, Part, Role
from flashlive.protocol.decisions import first_refusal
from flashlive.protocol.generate import GenerateContentRequest, GenerationConfig
from flashlive.protocol.live import (
    ActivityHandling,
    ContextWindowCompression,
    ResponseModality,
    Setup,
    TurnCoverage,
)

SPOKEN_STYLE = (
    "You are talking with the user by voice: your words are spoken aloud. Answer in short, plain "
    "sentences, without lists, markdown, code or emoji."
)


@dataclass(frozen=True)
class LiveConfig:
    """A validated setup, reduced to the decisions the session makes."""

    model: str
    modality: ResponseModality
    input_transcription: bool
    output_transcription: bool
    automatic_activity: bool
    interrupts: bool
    vad: VadSettings
    base: GenerateContentRequest  # everything of a request but its contents

    resumable: bool = False  # sessionResumption was asked for: the state outlives the socket
    # What a camera view counts as, and the size it is looked at.
    views: Resolution = field(default_factory=Resolution)
    views_in_activity_only: bool = False  # turnCoverage TURN_INCLUDES_ONLY_ACTIVITY
    initial_history: bool = False  # clientContent up to turnComplete is history, not a turn

    @classmethod
    def from_setup(cls, setup: Setup) -> LiveConfig:
        if (refusal := first_refusal(setup)) is not None:
            raise FailedPrecondition(f"setup.{refusal}")
        if setup.cached_content and (setup.system_instruction or setup.tools or setup.tool_config):
            raise FailedPrecondition(
                "a setup naming a cachedContent takes its systemInstruction, tools and toolConfig "
                "from the cache"
            )
        model = model_id(setup.model)
        if not model:
            raise FailedPrecondition("setup.model must name a model, as models/{id}")
        live = setup.generation_config
        modality = live.modality if live is not None else ResponseModality.TEXT
        realtime = setup.realtime_input_config
        detection = realtime.automatic_activity_detection if realtime else None
        handling = realtime.activity_handling if realtime else None
        vad = vad_settings(
            detection.start_of_speech_sensitivity if detection else None,
            detection.end_of_speech_sensitivity if detection else None,
            detection.prefix_padding_ms if detection else None,
            detection.silence_duration_ms if detection else None,
        )
        return cls(
            model=model,
            modality=modality,
            input_transcription=setup.input_audio_transcription is not None,
            output_transcription=setup.output_audio_transcription is not None,
            automatic_activity=not (detection is not None and detection.disabled),
            interrupts=handling is not ActivityHandling.NO_INTERRUPTION,
            vad=vad,
            resumable=setup.session_resumption is not None,
            views=resolution_of(live.media_resolution if live is not None else None),
            views_in_activity_only=(
                realtime is not None
                and realtime.turn_coverage is TurnCoverage.TURN_INCLUDES_ONLY_ACTIVITY
            ),
            initial_history=bool(
                setup.history_config and setup.history_config.initial_history_in_client_content
            ),
            base=GenerateContentRequest(
                cached_content=setup.cached_content,
                system_instruction=(
                    None if setup.cached_content else _system_instruction(setup, modality)
                ),
                tools=setup.tools,
                tool_config=setup.tool_config,
                safety_settings=setup.safety_settings,
                generation_config=_text_generation_config(live),
            ),
        )


def _system_instruction(setup: Setup, modality: ResponseModality) -> Content | None:
    given = setup.system_instruction
    if modality is not ResponseModality.AUDIO:
        return given
    parts = list(given.parts) if given is not None else []
    return Content(parts=[*parts, Part(text=SPOKEN_STYLE)])


def _text_generation_config(live: GenerationConfig | None) -> GenerationConfig | None:
    """The Live config as the text generator sees it: speech is produced after the text."""
    if live is None:
        return None
    keep = live.model_dump(
        exclude={
            "response_modalities",
            "speech_config",
            "media_resolution",
            "enable_affective_dialog",
            "translation_config",
            "thinking_config",
        },
        exclude_none=True,
    )
    return GenerationConfig(**keep)


MESSAGE_OVERHEAD = 6  # tokens a chat template adds around each message (role markers, ends)
TRIGGER_SHARE = 0.8  # without triggerTokens, compress at this share of the context limit


@dataclass(frozen=True)
class Window:
    """How much context a session may hold, and what happens when it is full.

    `limit` is the model's context less room for an answer. With compression on, a turn that
    would take the context past `trigger` tokens first drops the oldest turns, down to `target`;
    without it, a turn that would pass `limit` ends the session with a clear reason.
    """

    limit: int
    trigger: int | None = None  # None: no compression
    target: int = 0

    @classmethod
    def from_setup(
        cls, compression: ContextWindowCompression | None, *, context_size: int, reserve: int
    ) -> Window:
        limit = max(context_size - reserve, 1)
        if compression is None:
            return cls(limit)
        # Settings sized for a far larger context (Gemini's examples use a 25,600-token trigger)
        # are scaled down to this model's rather than refused: a client written for Gemini works.
        trigger = compression.trigger_tokens or int(limit * TRIGGER_SHARE)
        shrunk = trigger > limit
        trigger = min(trigger, limit)
        window = compression.sliding_window
        target = window.target_tokens if window and window.target_tokens else trigger // 2
        if target >= trigger:
            if not shrunk:
                raise FailedPrecondition(
                    f"slidingWindow.targetTokens {target} must be below triggerTokens {trigger}"
                )
            target = trigger // 2
        return cls(limit, trigger, target)


def content_text(content: Content) -> str:
    """The words of a history entry, to count what it costs in context."""
    return "\n".join(content_pieces(content))


def content_pieces(content: Content) -> list[str]:
    """The text of each part of a history entry that the model reads."""
    pieces: list[str] = []
    for part in content.parts:
        if part.text:
            pieces.append(part.text)
        elif part.function_call is not None:
            pieces.append(part.function_call.model_dump_json(exclude_none=True))
        elif part.function_response is not None:
            pieces.append(part.function_response.model_dump_json(exclude_none=True))
    return pieces


def _no_count(content: Content) -> int:
    return 0


@dataclass
class Conversation:
    """The turns the model has seen, and the client turns still waiting for turnComplete.

    Each history entry's cost in tokens is counted once, when it arrives, so the window can be
    kept without tokenizing the whole context again every turn.
    """

    history: list[Content] = field(default_factory=list)
    pending: list[Content] = field(default_factory=list)
    open_calls: dict[str, str] = field(default_factory=dict)  # function call id → name
    version: int = 0  # bumps on every change of history, so a draft can tell it is stale
    answer_owed: bool = False  # the last user turn is committed and its answer not yet given
    count: Callable[[Content], int] = _no_count  # tokens of one entry, template included
    base_tokens: int = 0  # system instruction, tools, cached content: never dropped
    costs: list[int] = field(default_factory=list)  # parallel to history
    # Also parallel: the tokens of a camera view an entry carries (0: none), billed as an image.
    view_tokens: list[int] = field(default_factory=list)
    dropped_turns: int = 0  # turns the sliding window has removed so far
    view: str | None = None  # what the camera shows, not yet told to the model
    view_told: str | None = None  # the view the history ends with

    def __post_init__(self) -> None:
        if len(self.costs) != len(self.history):
            self.costs = [self.count(c) for c in self.history]
        if len(self.view_tokens) != len(self.history):
            self.view_tokens = [0] * len(self.history)

    @property
    def tokens(self) -> int:
        """The context the model sees for the history: what the window is kept under."""
        return self.base_tokens + sum(self.costs)

    def _append(self, content: Content, view_tokens: int = 0) -> None:
        self.history.append(content)
        self.costs.append(self.count(content))
        self.view_tokens.append(view_tokens)

    def views(self, user: Content | None) -> tuple[int, int]:
        """Camera views in `request(base, user)`, and the tokens of their text."""
        told = [t for t in self.view_tokens if t]
        if self.view is not None:
            told.append(self._view_cost())
        return len(told), sum(told)

    def _view_cost(self) -> int:
        text = self.count(Content(role=Role.USER, parts=[self._view_part()])) - MESSAGE_OVERHEAD
        return max(text, 1)

    def _view_part(self) -> Part:
        return Part(text=f"[camera: {self.view}]\n")

    def add_client_turns(self, turns: list[Content]) -> None:
        for i, turn in enumerate(turns):
            if not turn.parts:
                raise InvalidArgument(f"clientContent.turns[{i}] has no parts")
        self.pending.extend(Content(role=t.role or Role.USER, parts=list(t.parts)) for t in turns)

    def request(self, base: GenerateContentRequest, user: Content | None) -> GenerateContentRequest:
        return base.model_copy(update={"contents": [*self.history, *self._incoming(user)]})

    def see(self, view: str) -> None:
        """What the camera shows now; it joins the next user turn, unless it changes again."""
        if view != self.view and view != self.view_told:
            self.view = view
            self.version += 1  # a draft made without it answers the wrong picture
        elif view == self.view_told:
            self.view = None

    def _incoming(self, user: Content | None) -> list[Content]:
        """The pending turns and `user`, with the unseen view in front of the user's words."""
        incoming = [*self.pending, *([user] if user is not None else [])]
        if self.view is None:
            return incoming
        seen = self._view_part()
        if incoming and incoming[-1].role is not Role.MODEL:
            last = incoming[-1]
            return [*incoming[:-1], Content(role=last.role, parts=[seen, *last.parts])]
        return [*incoming, Content(role=Role.USER, parts=[seen])]

    def commit_history(self, window: Window | None = None) -> None:
        """The waiting turns are history the client gave (historyConfig): kept, not answered."""
        for content in self.pending:
            self._append(content)
        self.pending.clear()
        self.version += 1
        if window is not None:
            self.keep_within(window)
            if self.tokens > window.limit:
                raise FailedPrecondition(
                    f"the initial history is {self.tokens} tokens; the session holds "
                    f"{window.limit}: set contextWindowCompression to keep its end"
                )

    def has_input(self, user: Content | None) -> bool:
        return user is not None or bool(self.pending)

    def commit_user(self, user: Content | None, window: Window | None = None) -> int:
        """Make the waiting input history, keeping the context inside `window`; returns how
        many of the oldest turns were dropped for it."""
        incoming = self._incoming(user)
        view = self._view_cost() if self.view is not None else 0
        for k, content in enumerate(incoming):
            self._append(content, view if k == len(incoming) - 1 else 0)
        self.pending.clear()
        if self.view is not None:
            self.view_told, self.view = self.view, None
        self.version += 1
        self.answer_owed = True
        if window is None:
            return 0
        dropped = self.keep_within(window)
        if self.tokens > window.limit:
            raise FailedPrecondition(
                f"the session's context is full ({self.tokens} of {window.limit} tokens); "
                "set contextWindowCompression to keep going"
            )
        return dropped

    def keep_within(self, window: Window) -> int:
        """Slide the window when the context is past its trigger; returns the turns dropped.

        Called when an answer ends too, so the shorter context can be computed while the user
        is still thinking rather than when their next turn arrives.
        """
        if window.trigger is not None and self.tokens > window.trigger:
            return self._slide(window.target)
        return 0

    def _slide(self, target: int) -> int:
        """Drop whole turns, oldest first, until the context fits `target`. The newest turn
        always stays, however long: it is what is being answered."""
        starts = [i for i, c in enumerate(self.history) if _starts_turn(c)]
        cut = 0
        tokens = self.tokens
        for start in starts[1:]:
            if tokens <= target:
                break
            tokens -= sum(self.costs[cut:start])
            cut = start
        if cut == 0:
            return 0
        dropped = sum(1 for i in starts if i < cut)
        del self.history[:cut]
        del self.costs[:cut]
        del self.view_tokens[:cut]
        self.dropped_turns += dropped
        self.version += 1
        return dropped

    def record_model(self, text: str, calls: list[FunctionCall]) -> None:
        self.answer_owed = False
        parts = ([Part(text=text)] if text else []) + [Part(function_call=c) for c in calls]
        if parts:
            self._append(Content(role=Role.MODEL, parts=parts))
            self.version += 1

    def expect_calls(self, calls: list[FunctionCall]) -> None:
        for call in calls:
            if call.id is not None:
                self.open_calls[call.id] = call.name

    def replace_last_model(self, heard: str) -> None:
        """After a barge-in: the model's last answer is what the user heard of it."""
        if self.history and self.history[-1].role is Role.MODEL:
            self.history.pop()
            self.costs.pop()
            self.view_tokens.pop()
        if heard:
            self._append(Content(role=Role.MODEL, parts=[Part(text=heard)]))
        self.answer_owed = False
        self.version += 1

    def answer_calls(self, responses: list[FunctionResponse]) -> Content:
        if not responses:
            raise InvalidArgument("toolResponse.functionResponses is empty")
        for i, response in enumerate(responses):
            if response.id is None or response.id not in self.open_calls:
                raise InvalidArgument(
                    f"toolResponse.functionResponses[{i}]: id {response.id!r} does not answer "
                    "a function call of this session"
                )
        for response in responses:
            del self.open_calls[response.id or ""]
        return Content(role=Role.USER, parts=[Part(function_response=r) for r in responses])

    def cancel_calls(self) -> list[str]:
        ids = list(self.open_calls)
        self.open_calls.clear()
        return ids

    def state(self) -> dict[str, Any]:
        """What a resumed session needs to carry on exactly here (JSON-ready)."""
        return {
            "history": [_dump(c) for c in self.history],
            "pending": [_dump(c) for c in self.pending],
            "openCalls": dict(self.open_calls),
            "answerOwed": self.answer_owed,
            "droppedTurns": self.dropped_turns,
        }

    @classmethod
    def from_state(
        cls, state: dict[str, Any], count: Callable[[Content], int] = _no_count
    ) -> Conversation:
        try:
            conversation = cls(
                history=[Content.model_validate(c) for c in state["history"]],
                pending=[Content.model_validate(c) for c in state["pending"]],
                open_calls={str(k): str(v) for k, v in state["openCalls"].items()},
                answer_owed=bool(state["answerOwed"]),
                dropped_turns=int(state.get("droppedTurns", 0)),
                count=count,
            )
        except (KeyError, TypeError, AttributeError, ValueError, OverflowError) as exc:
            raise ValueError(f"a saved session state is malformed: {exc}") from None
        return conversation


def _dump(content: Content) -> dict[str, Any]:
    return content.model_dump(mode="json", by_alias=True, exclude_none=True)


def _starts_turn(content: Content) -> bool:
    """A user message that is not a tool result: where a turn, and a window cut, may begin."""
    return content.role is not Role.MODEL and not any(
        p.function_response is not None for p in content.parts
    )


@dataclass(frozen=True)
class SavedSession:
    """A resumable session as the store keeps it: whose it is, its setup, its conversation."""

    key_hash: str
    setup: Setup
    conversation: dict[str, Any]

    def to_bytes(self) -> bytes:
        setup = self.setup.model_dump(mode="json", by_alias=True, exclude_none=True)
        setup.pop("sessionResumption", None)
        return json.dumps(
            {"v": 1, "keyHash": self.key_hash, "setup": setup, "conversation": self.conversation},
            separators=(",", ":"),
        ).encode()

    @classmethod
    def from_bytes(cls, raw: bytes) -> SavedSession:
        try:
            data = json.loads(raw)
            if data.get("v") != 1:
                raise ValueError(f"unknown version {data.get('v')!r}")
            return cls(
                key_hash=str(data["keyHash"]),
                setup=Setup.model_validate(data["setup"]),
                conversation=dict(data["conversation"]),
            )
        except (ValueError, KeyError, TypeError, AttributeError, RecursionError) as exc:
            raise ValueError(f"a saved session state is malformed: {exc}") from None


@dataclass
class SpokenLog:
    """What was said aloud in one model turn, to tell how much the user heard before barging in.

    Audio is sent faster than real time; the client plays it from the first chunk on, so after
    `elapsed` seconds the user has heard every clause that started playing by then.
    """

    clauses: list[tuple[str, float]] = field(default_factory=list)  # (text, seconds of audio)

    def add(self, text: str, seconds: float) -> None:
        self.clauses.append((text, seconds))

    @property
    def seconds(self) -> float:
        return sum(s for _, s in self.clauses)

    def heard(self, elapsed: float) -> str:
        words: list[str] = []
        start = 0.0
        for text, seconds in self.clauses:
            if start > elapsed:
                break
            words.append(text.strip())
            start += seconds
        return " ".join(w for w in words if w)
