"""realtimeInput's media, read: audio to 16 kHz samples, camera frames checked and kept.

Pure: the MIME type, base64 and PCM parsing raise `InvalidArgument` naming the field; the
resampler's state is the only thing carried from one message to the next.
"""

from __future__ import annotations

from flashlive.errors import FailedPrecondition, InvalidArgument
from flashlive.live.actions import Action, QueueAudio, QueueMark, ShowFrame
from flashlive.live.frames import ACTIVITY_END, ACTIVITY_START, FLUSH, Frame
from flashlive.live.session import LiveConfig
from flashlive.perception.audio import INPUT_RATE, Resampler, parse_pcm_mime, pcm16_to_float
from flashlive.perception.mime import mime_base
from flashlive.perception.vision import IMAGE_MIMES
from flashlive.protocol.base import blob_bytes
from flashlive.protocol.content import Blob
from flashlive.protocol.live import RealtimeInput


class RealtimeReader:
    def __init__(self, config: LiveConfig, *, vision: bool) -> None:
        self.config = config
        self.vision = vision
        self.resampler: Resampler | None = None  # for the rate the client sends at now
        self.resampler_rate = INPUT_RATE

    def media(
        self, given: RealtimeInput, out: list[Action], *, user_active: bool, at_s: float
    ) -> None:
        """Append what the audio, frames and signals of `given` ask for to `out`, in order."""
        if given.audio is not None:
            self._audio(given.audio, "realtimeInput.audio", out)
        for i, blob in enumerate(given.media_chunks or []):
            where = f"realtimeInput.mediaChunks[{i}]"
            if blob.mime_type.lower().startswith("image/"):
                self._frame(blob, where, out, user_active=user_active, at_s=at_s)
            else:
                self._audio(blob, where, out)
        if given.video is not None:
            self._frame(given.video, "realtimeInput.video", out, user_active=user_active, at_s=at_s)
        if given.audio_stream_end:
            out.append(QueueMark(FLUSH))
        for signal, mark, name in (
            (given.activity_start, ACTIVITY_START, "activityStart"),
            (given.activity_end, ACTIVITY_END, "activityEnd"),
        ):
            if signal is None:
                continue
            if self.config.automatic_activity:
                raise FailedPrecondition(
                    f"{name} needs realtimeInputConfig.automaticActivityDetection.disabled"
                )
            out.append(QueueMark(mark))

    def _frame(
        self, blob: Blob, where: str, out: list[Action], *, user_active: bool, at_s: float
    ) -> None:
        """A camera frame for the camera to look at (the newest one wins there)."""
        if not self.vision:
            raise InvalidArgument(f"{where}: this server has no vision stage")
        if self.config.views_in_activity_only and not user_active:
            return  # turnCoverage: only what comes while the user speaks joins their turn
        mime = mime_base(blob.mime_type)
        if mime not in IMAGE_MIMES:
            raise InvalidArgument(
                f"{where}: {blob.mime_type} is not an image type this server reads"
            )
        out.append(ShowFrame(Frame(blob_bytes(blob.data, f"{where}.data"), mime, at_s)))

    def _audio(self, blob: Blob, where: str, out: list[Action]) -> None:
        try:
            rate = parse_pcm_mime(blob.mime_type)
        except InvalidArgument as exc:
            raise InvalidArgument(f"{where}: {exc.message}") from None
        pcm = blob_bytes(blob.data, f"{where}.data")
        samples = pcm16_to_float(pcm)
        if rate != self.resampler_rate:
            self.resampler_rate = rate
            self.resampler = Resampler(rate, INPUT_RATE) if rate != INPUT_RATE else None
        if self.resampler is not None:
            samples = self.resampler.feed(samples)
        if samples.size:
            out.append(QueueAudio(samples))
