"""Usage shaping: what a request's text and media count as, by one rule for REST and Live.

A model here reads images, audio and video as the text of what was seen and heard in them; the
usage it reports (and the ledger bills) counts them as Gemini does instead: an image as a fixed
number of tokens, audio and video by the second. REST (`UsageMetadata`) and Live
(`LiveUsageMetadata`) both shape their usage with these functions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from flashlive.protocol.generate import Modality, ModalityTokenCount, UsageMetadata
from flashlive.protocol.live import LiveUsageMetadata, ResponseModality


@dataclass(frozen=True)
class MediaTokens:
    """What media counts as in usage, as on Gemini, whatever text the model was given for it."""

    image: int = 258  # per image
    audio_per_s: float = 32.0
    video_per_s: float = 263.0  # the frames at the default rate; a sound track counts as audio


@dataclass
class MediaUse:
    """The media in one prompt, and the prompt tokens that stood in for it."""

    image_tokens: int = 0  # each image at the resolution it was seen at
    video_tokens: int = 0  # the frames of the videos, over time
    audio_seconds: float = 0.0
    observed_tokens: int = 0  # the tokens of the observation texts, billed as media instead


def prompt_details(
    prompt_tokens: int, media: MediaUse, rates: MediaTokens
) -> list[ModalityTokenCount]:
    """Prompt tokens by modality: text always, each medium when the prompt had some."""
    counts = (
        (Modality.TEXT, max(prompt_tokens - media.observed_tokens, 0)),
        (Modality.IMAGE, media.image_tokens),
        (Modality.VIDEO, media.video_tokens),
        (Modality.AUDIO, math.ceil(media.audio_seconds * rates.audio_per_s)),
    )
    return [
        ModalityTokenCount(modality=modality, token_count=count)
        for modality, count in counts
        if count or modality is Modality.TEXT
    ]


def usage_metadata(
    details: list[ModalityTokenCount], *, generated: int, cached: int = 0
) -> UsageMetadata:
    """A REST answer's usage: its prompt by modality and the text it generated."""
    prompt = sum(d.token_count for d in details)
    return UsageMetadata(
        prompt_token_count=prompt,
        cached_content_token_count=cached or None,
        candidates_token_count=generated,
        total_token_count=prompt + generated,
        prompt_tokens_details=details,
        candidates_tokens_details=(
            [ModalityTokenCount(modality=Modality.TEXT, token_count=generated)]
            if generated
            else None
        ),
    )


def live_usage(
    usage: UsageMetadata | None,
    modality: ResponseModality,
    views: tuple[int, int],
    image_tokens: int,
) -> LiveUsageMetadata:
    """A Live turn's usage from its generation's: the camera views in its prompt (`views`: how
    many, and the tokens of their texts) count as images of `image_tokens` each."""
    seen, seen_text = views
    media = MediaUse(
        image_tokens=seen * image_tokens if usage is not None else 0, observed_tokens=seen_text
    )
    details = prompt_details(usage.prompt_token_count if usage else 0, media, MediaTokens())
    response = (usage.candidates_token_count or 0) if usage else 0
    out = Modality.AUDIO if modality is ResponseModality.AUDIO else Modality.TEXT
    prompt = sum(d.token_count for d in details)
    return LiveUsageMetadata(
        prompt_token_count=prompt,
        cached_content_token_count=usage.cached_content_token_count if usage else None,
        response_token_count=response,
        total_token_count=prompt + response,
        prompt_tokens_details=details,
        response_tokens_details=[ModalityTokenCount(modality=out, token_count=response)],
    )


def tokens_by_modality(details: list[ModalityTokenCount] | None, total: int) -> dict[str, int]:
    """Token counts as a ledger record keeps them: by modality, zeros left out; a count given
    without details is text."""
    if not details:
        return {"TEXT": total} if total else {}
    return {str(d.modality.value): d.token_count for d in details if d.token_count}
