"""mediaResolution: what an image or a video frame counts as, and how large it is looked at.

A request's `generationConfig.mediaResolution` (a Live setup's, for camera views) sets it for
all its media; a part's own `mediaResolution` (a level, or a number of tokens) wins for that
part. LOW and MEDIUM count 64 and 256 tokens, as on Gemini, and the vision stage looks at the
picture shrunk to match, 48 pixels a side per square root of a token (384 px, 768 px): less
detail for fewer tokens. HIGH, ULTRA_HIGH and no setting are the server's default: the whole
picture, counted as `--image-tokens` (a video frame at `--video-tokens-per-s`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from flashlive.protocol.content import MediaResolution, PartMediaResolution

LEVEL_TOKENS = {MediaResolution.LOW: 64, MediaResolution.MEDIUM: 256}
PIXELS_PER_ROOT_TOKEN = 48


@dataclass(frozen=True)
class Resolution:
    tokens: int | None = None  # None: the server's default count
    max_side: int | None = None  # None: the whole picture

    def image_tokens(self, default: int) -> int:
        return self.tokens if self.tokens is not None else default


def resolution_of(
    level: MediaResolution | None, part: PartMediaResolution | None = None
) -> Resolution:
    """The resolution a part is seen at: its own, else the request's `level`."""
    if part is not None and part.num_tokens is not None:
        return _counting(part.num_tokens)
    chosen = part.level if part is not None and part.level is not None else level
    tokens = LEVEL_TOKENS.get(chosen) if chosen is not None else None
    return _counting(tokens) if tokens is not None else Resolution()


def _counting(tokens: int) -> Resolution:
    return Resolution(tokens, round(PIXELS_PER_ROOT_TOKEN * math.sqrt(tokens)))
