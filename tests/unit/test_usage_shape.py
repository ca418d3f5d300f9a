"""Usage shaping: one rule for what text and media count as, for REST and Live."""

from __future__ import annotations

from flashlive.protocol.generate import Modality, ModalityTokenCount, UsageMetadata
from flashlive.protocol.live import ResponseModality
from flashlive.usage import (
    MediaTokens,
    MediaUse,
    live_usage,
    prompt_details,
    tokens_by_modality,
    usage_metadata,
)


def counts(details: list[ModalityTokenCount]) -> dict[Modality, int]:
    return {d.modality: d.token_count for d in details}


def test_media_counts_as_media_and_its_observation_text_not_as_text() -> None:
    media = MediaUse(image_tokens=258, video_tokens=526, audio_seconds=1.5, observed_tokens=40)
    details = prompt_details(100, media, MediaTokens(audio_per_s=32.0))
    assert counts(details) == {
        Modality.TEXT: 60,
        Modality.IMAGE: 258,
        Modality.VIDEO: 526,
        Modality.AUDIO: 48,
    }


def test_a_text_prompt_has_only_its_text_detail() -> None:
    assert counts(prompt_details(7, MediaUse(), MediaTokens())) == {Modality.TEXT: 7}
    assert counts(prompt_details(0, MediaUse(), MediaTokens())) == {Modality.TEXT: 0}


def test_audio_rounds_up_to_a_whole_token() -> None:
    media = MediaUse(audio_seconds=0.01)
    assert counts(prompt_details(0, media, MediaTokens(audio_per_s=32.0)))[Modality.AUDIO] == 1


def test_usage_metadata_totals_prompt_and_generated_tokens() -> None:
    details = prompt_details(10, MediaUse(image_tokens=258, observed_tokens=4), MediaTokens())
    usage = usage_metadata(details, generated=5, cached=3)
    assert usage.prompt_token_count == 6 + 258 and usage.candidates_token_count == 5
    assert usage.total_token_count == 6 + 258 + 5 and usage.cached_content_token_count == 3
    assert usage.candidates_tokens_details == [
        ModalityTokenCount(modality=Modality.TEXT, token_count=5)
    ]
    silent = usage_metadata(details, generated=0)
    assert silent.cached_content_token_count is None and silent.candidates_tokens_details is None


def test_ledger_counts_leave_zeros_out_and_read_a_bare_total_as_text() -> None:
    details = [
        ModalityTokenCount(modality=Modality.TEXT, token_count=3),
        ModalityTokenCount(modality=Modality.IMAGE, token_count=0),
    ]
    assert tokens_by_modality(details, 3) == {"TEXT": 3}
    assert tokens_by_modality(None, 9) == {"TEXT": 9} and tokens_by_modality(None, 0) == {}


def test_live_camera_views_count_as_images() -> None:
    usage = UsageMetadata(prompt_token_count=100, candidates_token_count=4, total_token_count=104)
    shaped = live_usage(usage, ResponseModality.AUDIO, (2, 30), 258)
    assert counts(shaped.prompt_tokens_details or []) == {
        Modality.TEXT: 70,
        Modality.IMAGE: 516,
    }
    assert shaped.total_token_count == 70 + 516 + 4
    assert shaped.response_tokens_details == [
        ModalityTokenCount(modality=Modality.AUDIO, token_count=4)
    ]
