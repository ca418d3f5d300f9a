"""The internal frames of a Live session: what moves between its tasks, in order.

Audio and the in-band marks travel on the audio queue (receive → listen), user turns on the turn
queue (receive or listen → answer), and a turn's own queue carries what it will send.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from flashlive.protocol.content import Content, Part, Role

if TYPE_CHECKING:
    from flashlive.live.answer import ModelTurn


@dataclass(frozen=True)
class Frame:
    data: bytes  # an encoded image
    mime: str
    at: float  # seconds into the session's audio when it arrived


@dataclass(frozen=True)
class AudioIn:
    samples: np.ndarray  # float32 at 16 kHz


class Mark:
    """In-band signals on the audio queue, kept in order with the audio around them."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"Mark({self.name})"


FLUSH, ACTIVITY_START, ACTIVITY_END = Mark("flush"), Mark("activityStart"), Mark("activityEnd")


@dataclass
class UserTurn:
    user: Content | None  # None: the turn is the pending clientContent
    transcript: str | None = None
    draft: ModelTurn | None = None
    answers_tools: bool = False
    asr_s: float | None = None


@dataclass
class Spoken:
    """A clause that was sent as audio: kept in the turn's queue in order with its audio."""

    text: str
    seconds: float


def user_text(text: str) -> Content:
    return Content(role=Role.USER, parts=[Part(text=text)])
