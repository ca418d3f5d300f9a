"""Video files → frames sampled over time, and the audio track, for the vision and ASR stages."""

from __future__ import annotations

import io
from dataclasses import dataclass

import av
import numpy as np
from PIL import Image

from flashlive.errors import InvalidArgument
from flashlive.perception.audio import INPUT_RATE, FloatArray
from flashlive.perception.mime import mime_base

VIDEO_MIMES = frozenset({"video/mp4", "video/webm", "video/quicktime", "video/x-matroska"})


@dataclass
class Clip:
    """What a video holds, as the perception stages take it."""

    frames: list[tuple[float, Image.Image]]  # (seconds from the start, RGB image), in order
    seconds: float  # its duration
    audio: FloatArray | None  # the sound track at 16 kHz mono, when there is one


def decode_video(
    data: bytes,
    mime: str,
    *,
    fps: float,
    max_seconds: float,
    start: float = 0.0,
    end: float | None = None,
) -> Clip:
    """`fps` frames a second (the first frame at or after each sampling time) and the audio,
    of the clip from `start` to `end` seconds (None: the end); times count from `start`."""
    base = mime_base(mime)
    if base not in VIDEO_MIMES:
        known = ", ".join(sorted(VIDEO_MIMES))
        raise InvalidArgument(f"{mime} is not a video type this server reads (one of {known})")
    try:
        with av.open(io.BytesIO(data), mode="r") as container:
            if not container.streams.video:
                raise InvalidArgument(f"the {mime} data has no video stream")
            stream = container.streams.video[0]
            step = 1.0 / float(stream.average_rate) if stream.average_rate else 0.0
            frames: list[tuple[float, Image.Image]] = []
            due = 0.0
            last = 0.0
            for frame in container.decode(video=0):
                at = float(frame.time or 0.0) - start
                if end is not None and at + start >= end:
                    break
                if at < -1e-6:
                    continue  # before the clip
                last = max(last, at)
                if at > max_seconds:
                    raise InvalidArgument(f"the video is longer than {max_seconds:.0f} s")
                if at + 1e-6 >= due:
                    frames.append((at, frame.to_image().convert("RGB")))  # type: ignore[no-untyped-call]
                    due += 1.0 / fps
                    while due <= at:
                        due += 1.0 / fps
            stated = float(container.duration or 0) / av.time_base
            whole = stated if stated > 0 else last + start + step
            duration = min(whole, end if end is not None else whole) - start
    except av.error.FFmpegError as exc:
        raise InvalidArgument(f"the {mime} data is not a readable video: {exc}") from None
    if not frames:
        raise InvalidArgument(
            f"the {mime} data holds no frames" + (" in the clip" if start else "")
        )
    seconds = min(duration, max_seconds)
    return Clip(frames, seconds, _clipped(_sound_track(data), start, seconds))


def _clipped(audio: FloatArray | None, start: float, seconds: float) -> FloatArray | None:
    if audio is None:
        return None
    clip = audio[int(start * INPUT_RATE) : int((start + seconds) * INPUT_RATE)]
    return clip if clip.size else None


def _sound_track(data: bytes) -> FloatArray | None:
    from faster_whisper.audio import decode_audio

    try:
        samples = decode_audio(io.BytesIO(data), sampling_rate=INPUT_RATE)
    except (IndexError, av.error.FFmpegError):  # no audio stream, or one that cannot be read
        return None
    return np.asarray(samples, dtype=np.float32) if samples.size else None
