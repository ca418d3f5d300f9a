"""The pure part of a Live session: what a setup means, and what the model has been told.

No I/O here. The asyncio driver (`live/driver.py`) owns sockets, tasks and models and asks
these classes what to do; the unit tests drive them directly.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from flashlive.errors import FailedPrecondition, InvalidArgument
from flashlive.perception.vad import VadSettings
from flashlive.protocol.content import Content, FunctionCall, FunctionResponse, Part, Role
from flashlive.protocol.generate import GenerateContentRequest, GenerationConfig
from flashlive.protocol.live import ActivityHandling, ResponseModality, Setup

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

    @classmethod
    def from_setup(cls, setup: Setup) -> LiveConfig:
        if setup.session_resumption is not None:
            raise FailedPrecondition("sessionResumption is not supported by this server yet")
        if setup.context_window_compression is not None:
            raise FailedPrecondition("contextWindowCompression is not supported by this server yet")
        if setup.proactivity and any(setup.proactivity.values()):
            raise FailedPrecondition("proactivity is not supported by this server")
        if setup.generation_config and setup.generation_config.enable_affective_dialog:
            raise FailedPrecondition("enableAffectiveDialog is not supported by this server")
        if setup.cached_content and (setup.system_instruction or setup.tools or setup.tool_config):
            raise FailedPrecondition(
                "a setup naming a cachedContent takes its systemInstruction, tools and toolConfig "
                "from the cache"
            )
        model = setup.model.removeprefix("models/")
        if not model:
            raise FailedPrecondition("setup.model must name a model, as models/{id}")
        live = setup.generation_config
        modality = live.modality if live is not None else ResponseModality.TEXT
        realtime = setup.realtime_input_config
        detection = realtime.automatic_activity_detection if realtime else None
        handling = realtime.activity_handling if realtime else None
        vad = VadSettings.from_live(
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


@dataclass
class Conversation:
    """The turns the model has seen, and the client turns still waiting for turnComplete."""

    history: list[Content] = field(default_factory=list)
    pending: list[Content] = field(default_factory=list)
    open_calls: dict[str, str] = field(default_factory=dict)  # function call id → name
    version: int = 0  # bumps on every change of history, so a draft can tell it is stale

    def add_client_turns(self, turns: list[Content]) -> None:
        for i, turn in enumerate(turns):
            if not turn.parts:
                raise InvalidArgument(f"clientContent.turns[{i}] has no parts")
        self.pending.extend(Content(role=t.role or Role.USER, parts=list(t.parts)) for t in turns)

    def request(self, base: GenerateContentRequest, user: Content | None) -> GenerateContentRequest:
        contents = [*self.history, *self.pending]
        if user is not None:
            contents.append(user)
        return base.model_copy(update={"contents": contents})

    def has_input(self, user: Content | None) -> bool:
        return user is not None or bool(self.pending)

    def commit_user(self, user: Content | None) -> None:
        self.history.extend(self.pending)
        self.pending.clear()
        if user is not None:
            self.history.append(user)
        self.version += 1

    def record_model(self, text: str, calls: list[FunctionCall]) -> None:
        parts = ([Part(text=text)] if text else []) + [Part(function_call=c) for c in calls]
        if parts:
            self.history.append(Content(role=Role.MODEL, parts=parts))
            self.version += 1

    def expect_calls(self, calls: list[FunctionCall]) -> None:
        for call in calls:
            if call.id is not None:
                self.open_calls[call.id] = call.name

    def replace_last_model(self, heard: str) -> None:
        """After a barge-in: the model's last answer is what the user heard of it."""
        if self.history and self.history[-1].role is Role.MODEL:
            self.history.pop()
        if heard:
            self.history.append(Content(role=Role.MODEL, parts=[Part(text=heard)]))
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
