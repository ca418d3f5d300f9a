import pytest
from pydantic import ValidationError

from flashlive.api.errors import http_status
from flashlive.errors import invalid_from_validation
from flashlive.protocol.content import Part
from flashlive.protocol.generate import GenerateContentRequest, GenerationConfig


def test_request_round_trips_in_camel_case() -> None:
    body = {
        "contents": [{"role": "user", "parts": [{"text": "hi"}]}],
        "systemInstruction": {"parts": [{"text": "be brief"}]},
        "generationConfig": {"maxOutputTokens": 5, "topK": 3, "stopSequences": ["x"]},
    }
    request = GenerateContentRequest.model_validate(body)
    assert request.generation_config is not None
    assert request.generation_config.max_output_tokens == 5
    assert request.dump() == body


@pytest.mark.parametrize(
    "config",
    [
        {"temperature": -0.1},
        {"temperature": "hot"},
        {"candidateCount": 2},
        {"topP": 1.5},
        {"maxOutputTokens": 0},
        {"stopSequences": ["a", "b", "c", "d", "e", "f"]},
        {"responseModalities": ["AUDIO"]},
    ],
)
def test_generation_config_rejects_bad_values(config: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        GenerationConfig.model_validate(config)


def test_unknown_field_is_reported_by_name() -> None:
    with pytest.raises(ValidationError) as info:
        GenerateContentRequest.model_validate({"contents": [], "generationConfig": {"tempo": 1}})
    error = invalid_from_validation(info.value)
    assert 'Unknown name "tempo"' in error.message
    assert "generationConfig" in error.message
    assert http_status(error) == 400


def test_part_needs_exactly_one_kind() -> None:
    with pytest.raises(ValidationError):
        Part.model_validate({})
    with pytest.raises(ValidationError):
        Part.model_validate({"text": "a", "functionCall": {"name": "f"}})
    assert Part.model_validate({"inlineData": {"mimeType": "image/png", "data": ""}}).kind == (
        "inline_data"
    )
