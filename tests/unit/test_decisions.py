"""Every field a client may send has a decision; refusals name the field; the README says which
fields are accepted and do nothing."""

from __future__ import annotations

import re
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel
from pydantic.alias_generators import to_camel

from flashlive.errors import FailedPrecondition
from flashlive.live.session import LiveConfig
from flashlive.protocol.base import OpenWire
from flashlive.protocol.caches import CachedContent, CreateCachedContentRequest
from flashlive.protocol.decisions import DECISIONS, Kind, decision_for, first_refusal
from flashlive.protocol.generate import CountTokensRequest, GenerateContentRequest
from flashlive.protocol.live import ClientMessage, Setup
from flashlive.protocol.tokens import CreateAuthTokenRequest

README = Path(__file__).resolve().parents[2] / "README.md"
ROOTS: tuple[type[BaseModel], ...] = (
    GenerateContentRequest,
    CountTokensRequest,
    CreateCachedContentRequest,
    CachedContent,
    ClientMessage,
    CreateAuthTokenRequest,
)
# Open on purpose: a JSON Schema's keywords are read by generation/schema.py, which ignores
# those it does not model; every other request object refuses a field it does not know.
OPEN_MODELS = {"Schema"}


def _models_in(annotation: Any) -> Iterator[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        yield annotation
    for argument in typing.get_args(annotation):
        yield from _models_in(argument)


def parsed_models() -> dict[str, type[BaseModel]]:
    """Every model a request may contain, by name, found from the request roots."""
    found: dict[str, type[BaseModel]] = {}
    waiting = list(ROOTS)
    while waiting:
        model = waiting.pop()
        if model.__name__ in found:
            continue
        found[model.__name__] = model
        for info in model.model_fields.values():
            waiting.extend(_models_in(info.annotation))
    return found


def test_every_parsed_field_has_a_decision() -> None:
    undecided = [
        f"{name}.{field}"
        for name, model in parsed_models().items()
        for field in model.model_fields
        if decision_for(model, field) is None
    ]
    assert undecided == [], "decide these in protocol/decisions.py"


def test_every_decision_is_of_a_parsed_field() -> None:
    models = parsed_models()
    stale = [
        key
        for key in DECISIONS
        if (name := key.split(".")[0]) not in models
        or (key.split(".")[1] != "*" and key.split(".")[1] not in models[name].model_fields)
    ]
    assert stale == []


def test_only_the_schema_accepts_fields_it_does_not_know() -> None:
    open_models = {
        name
        for name, model in parsed_models().items()
        if issubclass(model, OpenWire) or model.model_config.get("extra") != "forbid"
    }
    assert open_models == OPEN_MODELS


def test_the_readme_lists_exactly_the_accepted_no_ops_with_their_reasons() -> None:
    section = README.read_text().split("\n## Every field is acted on", 1)[1].split("\n## ", 1)[0]
    listed = dict(re.findall(r"^\| `([^`]+)` \| (.+) \|$", section, re.M))
    expected = {
        f"{key.split('.')[0]}.{to_camel(key.split('.')[1])}": decision.note
        for key, decision in DECISIONS.items()
        if decision.kind is Kind.NOOP
    }
    assert listed == expected


GENERATE_REFUSALS = [
    ({"generationConfig": {"audioTimestamp": True}}, "generationConfig.audioTimestamp"),
    (
        {"generationConfig": {"enableEnhancedCivicAnswers": True}},
        "generationConfig.enableEnhancedCivicAnswers",
    ),
    ({"generationConfig": {"responseLogprobs": True}}, "generationConfig.responseLogprobs"),
    ({"store": True}, "store"),
    ({"tools": [{"googleSearch": {}}]}, "tools[0].googleSearch"),
    (
        {"tools": [{"functionDeclarations": [{"name": "f", "behavior": "NON_BLOCKING"}]}]},
        "tools[0].functionDeclarations[0].behavior",
    ),
    (
        {"toolConfig": {"functionCallingConfig": {"streamFunctionCallArguments": True}}},
        "toolConfig.functionCallingConfig.streamFunctionCallArguments",
    ),
    (
        {"contents": [{"parts": [{"fileData": {"fileUri": "gs://x"}}]}]},
        "contents[0].parts[0].fileData",
    ),
    (
        {"generationConfig": {"responseSchema": {"type": "OBJECT", "minProperties": 1}}},
        "generationConfig.responseSchema.minProperties",
    ),
]


@pytest.mark.parametrize(("body", "path"), GENERATE_REFUSALS)
def test_a_refused_request_field_is_named(body: dict[str, Any], path: str) -> None:
    request = GenerateContentRequest.model_validate(
        {"contents": [{"parts": [{"text": "hi"}]}], **body}
    )
    refusal = first_refusal(request)
    assert refusal is not None and refusal.startswith(f"{path} is not supported: ")


SETUP_REFUSALS = [
    ({"generationConfig": {"translationConfig": {}}}, "generationConfig.translationConfig"),
    (
        {"generationConfig": {"enableAffectiveDialog": True}},
        "generationConfig.enableAffectiveDialog",
    ),
    ({"proactivity": {"proactiveAudio": True}}, "proactivity.proactiveAudio"),
    (
        {"realtimeInputConfig": {"turnCoverage": "TURN_INCLUDES_ALL_INPUT"}},
        "realtimeInputConfig.turnCoverage",
    ),
    (
        {"inputAudioTranscription": {"languageCodes": ["en-US", "fr-FR"]}},
        "inputAudioTranscription.languageCodes",
    ),
    ({"outputAudioTranscription": {"diarization": True}}, "outputAudioTranscription.diarization"),
    ({"inputAudioTranscription": {"mode": "SMART"}}, "inputAudioTranscription.mode"),
    (
        {"generationConfig": {"speechConfig": {"languageCode": "de-DE"}}},
        "generationConfig.speechConfig.languageCode",
    ),
]


@pytest.mark.parametrize(("setup", "path"), SETUP_REFUSALS)
def test_a_refused_setup_field_closes_the_session_naming_it(
    setup: dict[str, Any], path: str
) -> None:
    with pytest.raises(FailedPrecondition, match=re.escape(f"setup.{path} is not supported")):
        LiveConfig.from_setup(Setup.model_validate({"model": "models/m", **setup}))


def test_the_no_ops_the_issue_names_are_accepted() -> None:
    request = GenerateContentRequest.model_validate(
        {
            "contents": [
                {"role": "model", "parts": [{"text": "earlier", "thought": True}]},
                {"parts": [{"text": "hi", "thoughtSignature": "c2ln", "partMetadata": {"a": 1}}]},
            ],
            "generationConfig": {
                "thinkingConfig": {"thinkingBudget": 1024, "includeThoughts": True},
                "imageConfig": {"aspectRatio": "16:9"},
                "speechConfig": {"languageCode": "de-DE"},  # REST answers are text: inert
            },
            "labels": {"team": "a"},
            "serviceTier": "flex",
            "store": False,
            "safetySettings": [{"category": "HARM_CATEGORY_HARASSMENT", "threshold": "BLOCK_NONE"}],
        }
    )
    assert first_refusal(request) is None
    setup = Setup.model_validate(
        {
            "model": "models/m",
            "generationConfig": {"thinkingConfig": {"thinkingLevel": "LOW"}},
            "realtimeInputConfig": {"interimTranscriptTimestampEnabled": True},
            "inputAudioTranscription": {"languageCodes": ["en-GB"], "customVocabulary": ["x"]},
            "labels": {"team": "a"},
        }
    )
    LiveConfig.from_setup(setup)


def test_a_function_response_may_carry_scheduling_and_will_continue() -> None:
    message = ClientMessage.model_validate(
        {
            "toolResponse": {
                "functionResponses": [
                    {"id": "1", "name": "f", "willContinue": False, "scheduling": "WHEN_IDLE"}
                ]
            }
        }
    )
    assert first_refusal(message) is None
