"""Live wire messages: what the SDK sends parses; what it must not, does not."""

from __future__ import annotations

import json

import pytest
from google.genai import _common, _live_converters, types
from pydantic import ValidationError

from flashlive.protocol.live import (
    ActivityHandling,
    ClientMessage,
    ResponseModality,
    ServerContent,
    ServerMessage,
    SetupComplete,
)


def sdk_setup(config: types.LiveConnectConfig) -> dict[str, object]:
    """The setup frame exactly as the SDK builds it for the Gemini API."""
    params = types.LiveConnectParameters(model="models/m", config=config)
    converted = _live_converters._LiveConnectParameters_to_mldev(
        api_client=_FakeApiClient(),  # type: ignore[arg-type]
        from_object=params.model_dump(exclude_none=True),
    )
    converted.pop("config", None)
    return json.loads(
        json.dumps(_common.encode_unserializable_types(_common.convert_to_dict(converted)))
    )


class _FakeApiClient:
    vertexai = False


def test_sdk_setup_with_every_live_option_parses() -> None:
    config = types.LiveConnectConfig(
        response_modalities=["AUDIO"],
        temperature=0.2,
        max_output_tokens=100,
        system_instruction="Be brief.",
        speech_config=types.SpeechConfig(
            voice_config=types.VoiceConfig(
                prebuilt_voice_config=types.PrebuiltVoiceConfig(voice_name="Puck")
            )
        ),
        input_audio_transcription=types.AudioTranscriptionConfig(),
        output_audio_transcription=types.AudioTranscriptionConfig(),
        realtime_input_config=types.RealtimeInputConfig(
            automatic_activity_detection=types.AutomaticActivityDetection(
                disabled=False,
                start_of_speech_sensitivity=types.StartSensitivity.START_SENSITIVITY_HIGH,
                end_of_speech_sensitivity=types.EndSensitivity.END_SENSITIVITY_LOW,
                prefix_padding_ms=200,
                silence_duration_ms=700,
            ),
            activity_handling=types.ActivityHandling.NO_INTERRUPTION,
            turn_coverage=types.TurnCoverage.TURN_INCLUDES_ONLY_ACTIVITY,
        ),
    )
    message = ClientMessage.model_validate(sdk_setup(config))
    setup = message.setup
    assert setup is not None and setup.model == "models/m"
    assert setup.generation_config is not None
    assert setup.generation_config.modality is ResponseModality.AUDIO
    assert setup.realtime_input_config is not None
    assert setup.realtime_input_config.activity_handling is ActivityHandling.NO_INTERRUPTION
    assert setup.input_audio_transcription is not None


def test_snake_case_top_level_keys_as_the_sdk_sends_them() -> None:
    message = ClientMessage.model_validate_json(
        '{"realtime_input": {"audio": {"mimeType": "audio/pcm;rate=16000", "data": "AAAA"}}}'
    )
    assert message.kind == "realtime_input"
    assert message.realtime_input is not None and message.realtime_input.audio is not None


@pytest.mark.parametrize(
    "raw",
    [
        "{}",
        '{"setup": {"model": "m"}, "clientContent": {}}',
        '{"realtimeInput": {}}',
        '{"setup": {"model": "m", "generationConfig": {"responseModalities": ["IMAGE"]}}}',
        '{"setup": {"model": "m", "generationConfig": {"responseModalities": ["TEXT", "AUDIO"]}}}',
        '{"setup": {"model": "m", "realtimeInputConfig": {"activityHandling": "SOMETIMES"}}}',
        '{"setup": {"model": "m", "unknownField": 1}}',
        '{"setup": {}}',
    ],
)
def test_bad_client_messages_are_rejected(raw: str) -> None:
    with pytest.raises(ValidationError):
        ClientMessage.model_validate_json(raw)


def test_server_messages_serialise_as_the_sdk_reads_them() -> None:
    ready = ServerMessage(setup_complete=SetupComplete())
    assert ready.to_json() == '{"setupComplete":{}}'
    done = ServerMessage(server_content=ServerContent(turn_complete=True, interrupted=None))
    wire = json.loads(done.to_json())
    assert wire == {"serverContent": {"turnComplete": True}}
    parsed = types.LiveServerMessage.model_validate(
        _live_converters._LiveServerMessage_from_mldev(wire)
    )
    assert parsed.server_content is not None and parsed.server_content.turn_complete
