"""Media made at test time: signs with text, and videos of them (PyAV), with or without sound."""

from __future__ import annotations

import io

import av
import numpy as np
from PIL import Image, ImageDraw, ImageFont


def sign(text: str, size: tuple[int, int] = (320, 240), font_size: int = 48) -> Image.Image:
    """White words on a coloured board."""
    image = Image.new("RGB", size, (20, 20, 120))
    font = ImageFont.load_default(size=font_size)
    ImageDraw.Draw(image).text((30, size[1] // 2 - font_size // 2), text, fill="white", font=font)
    return image


def encoded(image: Image.Image, fmt: str = "PNG") -> bytes:
    out = io.BytesIO()
    image.save(out, fmt)
    return out.getvalue()


def video(
    words: list[str],
    *,
    fps: int = 4,
    seconds_each: float = 1.0,
    sound: bool = True,
    kind: str = "mp4",
) -> bytes:
    """A clip showing each word for `seconds_each`, in order, with a quiet tone if `sound`."""
    out = io.BytesIO()
    with av.open(out, "w", format=kind) as container:
        codec = "libx264" if kind == "mp4" else "libvpx"
        pictures = container.add_stream(codec, rate=fps)
        pictures.width, pictures.height, pictures.pix_fmt = 320, 240, "yuv420p"
        rate = 16000 if kind == "mp4" else 48000
        track = container.add_stream("aac" if kind == "mp4" else "libopus", rate=rate)
        n = 0
        for word in words:
            for _ in range(int(fps * seconds_each)):
                frame = av.VideoFrame.from_image(sign(word))
                frame.pts = n
                n += 1
                container.mux(pictures.encode(frame))
        container.mux(pictures.encode(None))
        if sound:
            t = np.arange(int(rate * seconds_each * len(words))) / rate
            samples = (np.sin(2 * np.pi * 440 * t) * 0.1).astype(np.float32)[None, :]
            chunk = av.AudioFrame.from_ndarray(samples, format="flt", layout="mono")
            chunk.sample_rate = rate
            container.mux(track.encode(chunk))
            container.mux(track.encode(None))
    return out.getvalue()
