"""Request media perception: the images, audio and video parts of a request become the text of
what was seen and heard in them, and how much media that was (for usage)."""

from __future__ import annotations

import asyncio
import functools
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from PIL import Image

from flashlive.errors import InvalidArgument
from flashlive.generation.resolution import Resolution, resolution_of
from flashlive.perception.audio import INPUT_RATE, FloatArray, decode_audio
from flashlive.perception.mime import mime_base
from flashlive.perception.video import decode_video
from flashlive.perception.vision import SceneWatch, Vision, fit
from flashlive.protocol.base import blob_bytes
from flashlive.protocol.content import ContentLayer, MediaResolution, Part, VideoMetadata
from flashlive.protocol.generate import GenerateContentRequest
from flashlive.usage import MediaTokens, MediaUse

MAX_AUDIO_PART_S = 600.0  # longer audio parts are refused: transcription takes ~1/10 real time
MAX_VIDEO_PART_S = 300.0  # ... and longer videos: each changed frame takes ~0.25 s to look at
MEDIA_PREFIXES = ("image/", "audio/", "video/")


@dataclass
class Perceived:
    """A request whose images and audio became text, and how much media that was."""

    request: GenerateContentRequest
    observations: list[str] = field(default_factory=list)
    images: int = 0
    media: MediaUse = field(default_factory=MediaUse)


class MediaReader:
    """Looks at images and videos with a vision stage, listens to audio with speech recognition."""

    def __init__(
        self,
        vision: Vision | None,
        transcribe: Callable[[FloatArray], Awaitable[str]] | None,
        rates: MediaTokens,
        video_fps: float,
    ) -> None:
        self._vision = vision
        self._transcribe = transcribe  # 16 kHz speech → text
        self.rates = rates
        self.video_fps = video_fps  # frames a second looked at in a video part

    async def perceive(
        self, request: GenerateContentRequest, level: MediaResolution | None
    ) -> Perceived:
        """The request with each image and audio part replaced by the text of what was seen
        or heard in it."""
        found = [
            (i, j, part)
            for i, content in enumerate(request.contents)
            for j, part in enumerate(content.parts)
            if part.inline_data is not None
            and part.inline_data.mime_type.lower().startswith(MEDIA_PREFIXES)
        ]
        perceived = Perceived(request)
        if not found:
            return perceived
        contents = [c.model_copy(update={"parts": list(c.parts)}) for c in request.contents]
        for i, j, part in found:
            text = await self._part(part, f"contents[{i}].parts[{j}]", level, perceived)
            contents[i].parts[j] = Part(text=text)
            perceived.observations.append(text)
        perceived.request = request.model_copy(update={"contents": contents})
        return perceived

    async def _part(
        self, part: Part, where: str, level: MediaResolution | None, perceived: Perceived
    ) -> str:
        blob = part.inline_data
        assert blob is not None
        data = blob_bytes(blob.data, f"{where}.inlineData.data")
        mime = blob.mime_type.lower()
        seen_at = resolution_of(level, part.media_resolution)
        if part.video_metadata is not None and not mime.startswith("video/"):
            raise InvalidArgument(f"{where}.videoMetadata applies to video parts only")
        try:
            if mime.startswith("image/"):
                return await self._look(data, mime_base(mime), seen_at, perceived)
            if mime.startswith("video/"):
                clip = part.video_metadata or VideoMetadata()
                return await self._watch(data, mime, clip, seen_at, perceived)
            return await self._listen(data, mime, perceived)
        except InvalidArgument as exc:
            raise InvalidArgument(f"{where}.inlineData: {exc.message}") from None

    async def _look(self, data: bytes, mime: str, at: Resolution, perceived: Perceived) -> str:
        vision = self._vision
        if vision is None:
            raise InvalidArgument("this server has no vision stage: images cannot be read")
        seen = await asyncio.to_thread(
            functools.partial(vision.observe, data, mime, max_side=at.max_side)
        )
        perceived.images += 1
        perceived.media.image_tokens += at.image_tokens(self.rates.image)
        return f"[image {perceived.images}: {seen.text}]\n"

    async def _listen(self, data: bytes, mime: str, perceived: Perceived) -> str:
        samples = await asyncio.to_thread(decode_audio, data, mime)
        return (
            f"[audio, {samples.size / INPUT_RATE:.1f} s: {await self._hear(samples, perceived)}]\n"
        )

    async def _hear(self, samples: FloatArray, perceived: Perceived) -> str:
        if self._transcribe is None:
            raise InvalidArgument("this server has no speech recognition: audio cannot be read")
        seconds = samples.size / INPUT_RATE
        if seconds > MAX_AUDIO_PART_S:
            raise InvalidArgument(
                f"the audio lasts {seconds:.0f} s; at most {MAX_AUDIO_PART_S:.0f} s are taken"
            )
        said = await self._transcribe(samples)
        perceived.media.audio_seconds += seconds
        return f"'{said}'" if said else "no speech"

    async def _watch(
        self, data: bytes, mime: str, meta: VideoMetadata, at: Resolution, perceived: Perceived
    ) -> str:
        """A video (the clip `meta` cuts, at its frame rate): what its sampled frames show, in
        time order (a scene as long as it lasts), and what its sound track says; each of the
        two only when `meta` asks for that layer."""
        vision = self._vision
        if vision is None:
            raise InvalidArgument("this server has no vision stage: video cannot be read")
        fps = meta.fps or self.video_fps
        clip = await asyncio.to_thread(
            functools.partial(
                decode_video,
                data,
                mime,
                fps=fps,
                max_seconds=MAX_VIDEO_PART_S,
                start=meta.start_offset.total_seconds() if meta.start_offset else 0.0,
                end=meta.end_offset.total_seconds() if meta.end_offset else None,
            )
        )
        looks, hears = layers(meta)
        pieces = []
        if looks:
            frames = [(t, fit(image, at.max_side)) for t, image in clip.frames]
            seen = await asyncio.to_thread(scenes, vision, frames)
            # Each frame counts as a picture at the resolution asked for; by default a second
            # of frames at the server's rate counts --video-tokens-per-s.
            frame_tokens = at.tokens or self.rates.video_per_s / self.video_fps
            perceived.media.video_tokens += math.ceil(clip.seconds * fps * frame_tokens)
            pieces.append(
                "; ".join(f"{s:.0f}-{e:.0f} s: {text}" for s, e, text in spans(seen, clip.seconds))
            )
        if hears and clip.audio is not None:
            pieces.append(f"sound: {await self._hear(clip.audio, perceived)}")
        return f"[video, {clip.seconds:.1f} s: {' | '.join(pieces) or 'nothing asked for'}]\n"


def scenes(vision: Vision, frames: list[tuple[float, Image.Image]]) -> list[tuple[float, str]]:
    """(start, what is seen) for each frame, a frame like the one before taking its text."""
    seen: list[tuple[float, str]] = []
    watch = SceneWatch()
    for at, image in frames:
        seen.append((at, vision.observe_image(image).text if watch.is_new(image) else seen[-1][1]))
    return seen


def spans(scenes: list[tuple[float, str]], end: float) -> list[tuple[float, float, str]]:
    """Runs of frames that show the same thing, as (start, end, text)."""
    runs: list[tuple[float, float, str]] = []
    for (at, text), (following, _) in zip(scenes, [*scenes[1:], (end, "")], strict=True):
        if runs and runs[-1][2] == text:
            runs[-1] = (runs[-1][0], following, text)
        else:
            runs.append((at, following, text))
    return runs


def layers(meta: VideoMetadata) -> tuple[bool, bool]:
    """Whether a video's frames are looked at, and its sound heard: both unless the part's
    contentLayers name only some (TRANSCRIPT is a transcript of the sound, AUDIO the sound)."""
    chosen = set(meta.content_layers or ()) - {ContentLayer.UNSPECIFIED}
    if not chosen:
        return True, True
    return ContentLayer.FRAMES in chosen, bool(
        chosen & {ContentLayer.AUDIO, ContentLayer.TRANSCRIPT}
    )
