"""The camera of a Live session: frames in, the newest one looked at, what it shows told.

A frame that arrives while another is still waiting replaces it (the waiting one is stale);
a scene that has not changed is not looked at again.
"""

from __future__ import annotations

import asyncio
import logging

from flashlive.errors import InvalidArgument
from flashlive.live.frames import Frame
from flashlive.live.session import Conversation
from flashlive.perception.vision import SceneWatch, Vision, decode_image, fit

log = logging.getLogger(__name__)


class Camera:
    def __init__(self, vision: Vision | None, session_id: str) -> None:
        self.vision = vision
        self.session_id = session_id
        self.frames: asyncio.Queue[Frame] = asyncio.Queue(1)  # the newest camera frame only
        self.seen = 0
        self.dropped = 0

    def show(self, frame: Frame) -> None:
        if self.frames.full():
            self.frames.get_nowait()
            self.dropped += 1
        self.frames.put_nowait(frame)

    async def look(self, conversation: Conversation, max_side: int | None) -> None:
        """Look at the newest frame whenever the last look is done. What is seen joins the
        next user turn."""
        vision = self.vision
        if vision is None:
            return
        watch = SceneWatch()
        while True:
            frame = await self.frames.get()
            try:
                image = await asyncio.to_thread(decode_image, frame.data, frame.mime)
            except InvalidArgument as exc:
                raise InvalidArgument(f"a video frame: {exc.message}") from None
            if not await asyncio.to_thread(watch.is_new, image):
                continue
            looked_at = fit(image, max_side)
            seen = await asyncio.to_thread(vision.observe_image, looked_at)  # decoded once
            self.seen += 1
            conversation.see(seen.text)
            log.debug(
                "live session %s: at %.1f s the camera shows %s",
                self.session_id,
                frame.at,
                seen.text,
            )
