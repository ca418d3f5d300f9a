"""What the session core asks its driver to do: plain values, run in the order given.

The core (`live/core.py`) decides; the asyncio driver (`live/driver.py`) carries each action out
and moves the bytes. An action names the work, never how it is scheduled, except where the order
against other tasks matters (`Emit.soon`, `Save.soon`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from flashlive.errors import FlashliveError
from flashlive.live.frames import Frame, Mark, UserTurn
from flashlive.protocol.live import ServerMessage, Setup


class TurnHandle(Protocol):
    """What the core knows of a model turn: enough to decide barge-in and drafts."""

    interrupted: bool
    sent_all: bool  # every message of the answer has been handed to the outbox
    version: int  # the conversation version it was started on

    def heard(self) -> str:
        """What the user has heard of the answer so far."""
        ...


@dataclass(frozen=True)
class Emit:
    message: ServerMessage
    # Queue it now, ahead of anything a later turn sends, without waiting for room.
    soon: bool = False


@dataclass(frozen=True)
class BeginSetup:
    """Open the session for this setup: resume, load the models, then report `setup_ready`."""

    setup: Setup


@dataclass(frozen=True, eq=False)
class QueueAudio:
    samples: np.ndarray  # float32 at 16 kHz, for the listener


@dataclass(frozen=True)
class QueueMark:
    mark: Mark  # in order with the audio around it


@dataclass(frozen=True)
class ShowFrame:
    frame: Frame  # for the camera: the newest replaces one not yet looked at


@dataclass(frozen=True)
class QueueTurn:
    turn: UserTurn  # for the model, once the turns before it are answered


@dataclass(frozen=True)
class Interrupt:
    """Cancel the turn the user cut into and record its usage (as a turn cut off)."""

    turn: TurnHandle


@dataclass(frozen=True)
class CancelDraft:
    """Cancel a turn drafted ahead of its commit: it answers a context that is gone."""

    turn: TurnHandle


@dataclass(frozen=True)
class Answer:
    """Answer `pending` (already history): with `draft` when it stands, else a new turn."""

    pending: UserTurn
    draft: TurnHandle | None


@dataclass(frozen=True, eq=False)
class StartSpeculation:
    """Transcribe the utterance so far and draft its answer during the pause."""

    sample: int
    audio: np.ndarray


@dataclass(frozen=True)
class DropSpeculation:
    pass


@dataclass(frozen=True)
class StopWarming:
    pass


@dataclass(frozen=True, eq=False)
class FinishUtterance:
    """Make the utterance a user turn: from the speculation's draft when `keep`, else by ASR."""

    audio: np.ndarray
    keep_speculation: bool = False


@dataclass(frozen=True)
class Save:
    """Write the session's state for resumption; `soon`: in its own task, not awaited."""

    soon: bool = False


@dataclass(frozen=True)
class AnnounceHandle:
    pass


@dataclass(frozen=True)
class PrefillContext:
    """Compute the shortened context while the engine is idle, while `version` stands."""

    version: int


@dataclass(frozen=True)
class AwaitTurn:
    """Let the answer being sent finish, for at most `timeout_s`."""

    turn: TurnHandle
    timeout_s: float


@dataclass(frozen=True)
class Close:
    """End the session: with the typed error it fails with, or cleanly (None: the client left)."""

    error: FlashliveError | None


Action = (
    Emit
    | BeginSetup
    | QueueAudio
    | QueueMark
    | ShowFrame
    | QueueTurn
    | Interrupt
    | CancelDraft
    | Answer
    | StartSpeculation
    | DropSpeculation
    | StopWarming
    | FinishUtterance
    | Save
    | AnnounceHandle
    | PrefillContext
    | AwaitTurn
    | Close
)
