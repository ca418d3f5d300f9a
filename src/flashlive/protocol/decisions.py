"""What this server does with every field a client may send: act on it, accept it as a no-op
Gemini's own semantics allow, or refuse it with an error that names it.

Every field of every request model (REST bodies, Live client messages, ephemeral token
requests) has an entry here, keyed `Model.field`, or `Model.*` for every field of an object that
is inert as a whole (a subclass inherits its base's entries unless it has its own);
tests/unit/test_decisions.py fails for a field parsed without one. `refusals`
walks a parsed message and reports each field set to a value that is refused, so a refusal is
decided here, once, and enforced at the edge (REST: 400; Live: 1008 for a setup, 1007 later).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from pydantic import BaseModel

from flashlive.protocol.content import Behavior
from flashlive.protocol.live import TranscriptionMode, TurnCoverage


class Kind(StrEnum):
    ACTED = "acted on"
    NOOP = "accepted, no effect"
    REFUSED = "refused"


@dataclass(frozen=True)
class Decision:
    kind: Kind
    note: str  # what is done; for a no-op why doing nothing is faithful; for a refusal, why
    refuses: Callable[[Any], bool] | None = None  # the values refused; None: none are


def acted(note: str, *, refusing: Callable[[Any], bool] | None = None) -> Decision:
    return Decision(Kind.ACTED, note, refusing)


def noop(reason: str) -> Decision:
    return Decision(Kind.NOOP, reason)


def refused(reason: str, when: Callable[[Any], bool] | None = None) -> Decision:
    return Decision(Kind.REFUSED, reason, when or _given)


def _given(value: Any) -> bool:
    return value is not None


def _true(value: Any) -> bool:
    return value is True


def _not_english(codes: Any) -> bool:
    listed = [codes] if isinstance(codes, str) else list(codes or [])
    return any(str(code).split("-")[0].lower() != "en" for code in listed)


ENGLISH_ONLY = "speech here is English only (Whisper tiny.en hears it, Piper's joe voice says it)"
PENDING_SAFETY = "no safety classifier yet: nothing is blocked or rated (kept as is until it lands)"
NO_SERVER_TOOLS = "only functionDeclarations run here; this configures tools that are refused"

DECISIONS: dict[str, Decision] = {
    # --- generateContent, countTokens -------------------------------------------------------
    "GenerateContentRequest.model": acted("must name the model of the URL path (or its alias)"),
    "GenerateContentRequest.contents": acted("the conversation"),
    "GenerateContentRequest.system_instruction": acted("the system turn"),
    "GenerateContentRequest.tools": acted("function declarations"),
    "GenerateContentRequest.tool_config": acted("function calling modes"),
    "GenerateContentRequest.safety_settings": noop(PENDING_SAFETY),
    "GenerateContentRequest.generation_config": acted("sampling and output shape"),
    "GenerateContentRequest.cached_content": acted("a cachedContents prefix"),
    "GenerateContentRequest.labels": noop(
        "metadata for billing reports; it changes no answer, and the usage ledger keeps no labels"
    ),
    "GenerateContentRequest.service_tier": acted(
        "the engine's priority class: PRIORITY before STANDARD before FLEX (Live turns first)"
    ),
    "GenerateContentRequest.store": refused(
        "store: true asks for the request to be logged; this server keeps no request content",
        _true,
    ),
    "CountTokensRequest.contents": acted("counted as generateContent would"),
    "CountTokensRequest.generate_content_request": acted("counted as generateContent would"),
    # --- contents ----------------------------------------------------------------------------
    "Content.role": acted("user, model (function: a user turn)"),
    "Content.parts": acted("the turn's parts"),
    "Part.text": acted("text"),
    "Part.inline_data": acted("images, audio and video, perceived; other types are a 400"),
    "Part.file_data": refused("files are not uploaded here: send the bytes as inlineData"),
    "Part.function_call": acted("a model turn's call"),
    "Part.function_response": acted("a call's result"),
    "Part.executable_code": refused("code execution does not run here"),
    "Part.code_execution_result": refused("code execution does not run here"),
    "Part.thought": acted("a thought part is left out of the prompt, as Gemini does with thoughts"),
    "Part.thought_signature": noop(
        "the model here keeps no hidden thoughts: a signature sent back has nothing to restore"
    ),
    "Part.video_metadata": acted("a video part's clip, frame rate and layers"),
    "Part.part_metadata": noop("the client's own bookkeeping; Gemini does not show it the model"),
    "Part.media_resolution": acted("the part's token count and the size it is looked at"),
    "Blob.mime_type": acted("decides how the data is read"),
    "Blob.data": acted("base64 bytes"),
    "FileData.mime_type": refused("files are not uploaded here: send the bytes as inlineData"),
    "FileData.file_uri": refused("files are not uploaded here: send the bytes as inlineData"),
    "FunctionCall.id": acted("matches a call to its response"),
    "FunctionCall.name": acted("the function"),
    "FunctionCall.args": acted("its arguments"),
    "FunctionResponse.id": acted("the call it answers (Live)"),
    "FunctionResponse.name": acted("the function"),
    "FunctionResponse.response": acted("the result"),
    "FunctionResponse.will_continue": noop(
        "only NON_BLOCKING calls take more responses, and Gemini ignores it otherwise; every "
        "call here blocks"
    ),
    "FunctionResponse.scheduling": noop(
        "only NON_BLOCKING calls are scheduled, and Gemini ignores it otherwise; every call "
        "here blocks"
    ),
    "VideoMetadata.start_offset": acted("the clip starts there"),
    "VideoMetadata.end_offset": acted("the clip ends there"),
    "VideoMetadata.fps": acted("frames a second looked at"),
    "VideoMetadata.content_layers": acted("FRAMES are looked at; AUDIO or TRANSCRIPT, heard"),
    "PartMediaResolution.level": acted("LOW 64, MEDIUM 256, HIGH (the default) --image-tokens"),
    "PartMediaResolution.num_tokens": acted("the part counts as that many tokens"),
    # --- tools --------------------------------------------------------------------------------
    "Tool.function_declarations": acted("the functions the model may call"),
    "Tool.google_search": refused("Google Search grounding does not run here"),
    "Tool.google_search_retrieval": refused("Google Search grounding does not run here"),
    "Tool.retrieval": refused("retrieval does not run here"),
    "Tool.code_execution": refused("code execution does not run here"),
    "Tool.url_context": refused("URL context does not run here"),
    "Tool.computer_use": refused("computer use does not run here"),
    "Tool.file_search": refused("file search does not run here"),
    "Tool.google_maps": refused("Google Maps grounding does not run here"),
    "FunctionDeclaration.name": acted("the function's name"),
    "FunctionDeclaration.description": acted("shown to the model"),
    "FunctionDeclaration.parameters": acted("shown to the model; a call's arguments fit it"),
    "FunctionDeclaration.parameters_json_schema": acted("as parameters"),
    "FunctionDeclaration.response": noop(
        "describes what the function returns; it constrains nothing the model writes"
    ),
    "FunctionDeclaration.response_json_schema": noop(
        "describes what the function returns; it constrains nothing the model writes"
    ),
    "FunctionDeclaration.behavior": acted(
        "BLOCKING: the session waits for the response; NON_BLOCKING calls do not run here",
        refusing=lambda v: v is Behavior.NON_BLOCKING,
    ),
    "ToolConfig.function_calling_config": acted("modes AUTO, ANY, NONE, VALIDATED"),
    "ToolConfig.retrieval_config": noop(NO_SERVER_TOOLS),
    "ToolConfig.include_server_side_tool_invocations": noop(
        "no server-side tool runs here, so there is no invocation to include"
    ),
    "FunctionCallingConfig.mode": acted("AUTO and VALIDATED: text or a well-formed call"),
    "FunctionCallingConfig.allowed_function_names": acted("limits the calls"),
    "FunctionCallingConfig.stream_function_call_arguments": refused(
        "a call's arguments arrive whole (Gemini's own API does not stream them either)", _true
    ),
    "SafetySetting.*": noop(PENDING_SAFETY),
    # Schema is read by generation/schema.py; keywords it does not model are ignored there.
    "Schema.type": acted("constrained output"),
    "Schema.format": acted("date-time, date, time and uuid are constrained"),
    "Schema.title": noop("a schema's name: it constrains nothing"),
    "Schema.description": acted("shown to the model"),
    "Schema.nullable": acted("constrained output"),
    "Schema.enum": acted("constrained output"),
    "Schema.items": acted("constrained output"),
    "Schema.min_items": acted("constrained output"),
    "Schema.max_items": acted("constrained output"),
    "Schema.properties": acted("constrained output"),
    "Schema.property_ordering": acted("the order properties are written in"),
    "Schema.required": acted("constrained output"),
    "Schema.min_properties": refused("the number of properties is not constrained here"),
    "Schema.max_properties": refused("the number of properties is not constrained here"),
    "Schema.min_length": acted("constrained output"),
    "Schema.max_length": acted("constrained output"),
    "Schema.pattern": acted("constrained output"),
    "Schema.minimum": acted("checked, and shown to the model in the schema; not enforced"),
    "Schema.maximum": acted("checked, and shown to the model in the schema; not enforced"),
    "Schema.any_of": acted("constrained output"),
    "Schema.default": noop("documents a value; in JSON Schema it constrains nothing"),
    # --- generationConfig (REST and Live) ------------------------------------------------------
    "GenerationConfig.temperature": acted("sampling (at most the model's maxTemperature)"),
    "GenerationConfig.top_p": acted("sampling"),
    "GenerationConfig.top_k": acted("sampling"),
    "GenerationConfig.candidate_count": acted("1 only"),
    "GenerationConfig.max_output_tokens": acted("the answer's length limit"),
    "GenerationConfig.stop_sequences": acted("stops the answer"),
    "GenerationConfig.seed": acted("same seed and request, same answer"),
    "GenerationConfig.presence_penalty": acted("sampling"),
    "GenerationConfig.frequency_penalty": acted("sampling"),
    "GenerationConfig.response_mime_type": acted("text/plain, application/json, text/x.enum"),
    "GenerationConfig.response_schema": acted("grammar-constrained output"),
    "GenerationConfig.response_json_schema": acted("grammar-constrained output"),
    "GenerationConfig.response_logprobs": refused("log probabilities are not returned yet", _true),
    "GenerationConfig.logprobs": refused("log probabilities are not returned yet", bool),
    "GenerationConfig.response_modalities": acted("TEXT (REST); TEXT or AUDIO (Live)"),
    "GenerationConfig.speech_config": noop(
        "configures spoken answers; REST answers are text (only TEXT is a response modality)"
    ),
    "GenerationConfig.thinking_config": noop(
        "a thinking budget or level is an upper bound, and these models answer without "
        "thinking: thoughtsTokenCount is 0 and there are no thoughts to include"
    ),
    "GenerationConfig.media_resolution": acted(
        "LOW 64, MEDIUM 256, HIGH (the default) --image-tokens a picture, and the size looked at"
    ),
    "GenerationConfig.image_config": noop("shapes generated images; answers here hold none"),
    "GenerationConfig.audio_timestamp": refused(
        "timestamps in audio understanding are a Vertex AI feature (the Gemini API refuses it "
        "too); transcripts here carry none",
        _true,
    ),
    "GenerationConfig.enable_enhanced_civic_answers": refused(
        "not available for these models", _true
    ),
    "SpeechConfig.voice_config": noop("one voice (Piper's joe) speaks whatever voice is named"),
    "SpeechConfig.language_code": acted(ENGLISH_ONLY, refusing=_not_english),
    "SpeechConfig.multi_speaker_voice_config": refused("one voice speaks here"),
    "ThinkingConfig.*": noop("as thinkingConfig: a bound on thoughts, and there are none"),
    "ImageConfig.*": noop("as imageConfig: answers here hold no images"),
    # --- cachedContents -----------------------------------------------------------------------
    "CreateCachedContentRequest.model": acted("the cache's model"),
    "CreateCachedContentRequest.display_name": acted("echoed back"),
    "CreateCachedContentRequest.contents": acted("cached"),
    "CreateCachedContentRequest.system_instruction": acted("cached"),
    "CreateCachedContentRequest.tools": acted("cached"),
    "CreateCachedContentRequest.tool_config": acted("cached"),
    "CreateCachedContentRequest.expire_time": acted("the cache's end"),
    "CreateCachedContentRequest.ttl": acted("the cache's end"),
    # A PATCH body: ttl or expireTime change; any other field it sets is a 400 (the update rule).
    **{
        f"CachedContent.{name}": acted("a PATCH changes ttl or expireTime only")
        for name in (
            "name",
            "display_name",
            "model",
            "contents",
            "system_instruction",
            "tools",
            "tool_config",
            "create_time",
            "update_time",
            "expire_time",
            "ttl",
            "usage_metadata",
        )
    },
    "CachedContentUsageMetadata.total_token_count": acted("output only: a PATCH refuses it"),
    # --- Live ---------------------------------------------------------------------------------
    "ClientMessage.setup": acted("the session's setup"),
    "ClientMessage.client_content": acted("turns"),
    "ClientMessage.realtime_input": acted("audio, video, text, activity"),
    "ClientMessage.tool_response": acted("function results"),
    "Setup.model": acted("the session's model (or an alias)"),
    "Setup.generation_config": acted("as REST, plus spoken answers"),
    "Setup.system_instruction": acted("the system turn"),
    "Setup.tools": acted("function declarations"),
    "Setup.tool_config": acted("function calling modes"),
    "Setup.safety_settings": noop(PENDING_SAFETY),
    "Setup.realtime_input_config": acted("activity detection and handling"),
    "Setup.session_resumption": acted("resumable sessions"),
    "Setup.context_window_compression": acted("the sliding window"),
    "Setup.input_audio_transcription": acted("the user's words are sent back"),
    "Setup.output_audio_transcription": acted("the spoken answer's words are sent"),
    "Setup.proactivity": acted("proactive audio and video are refused by name"),
    "Setup.history_config": acted("initial history in clientContent"),
    "Setup.labels": noop(
        "metadata for billing reports; it changes no answer, and the usage ledger keeps no labels"
    ),
    "Setup.cached_content": acted("the session starts with a cachedContents prefix"),
    "LiveGenerationConfig.speech_config": acted("the spoken answer's voice and language"),
    "LiveGenerationConfig.media_resolution": acted(
        "LOW 64, MEDIUM 256, HIGH (the default) --image-tokens a camera view, and the size "
        "looked at"
    ),
    "LiveGenerationConfig.enable_affective_dialog": refused(
        "affective dialog is not supported by this server", _true
    ),
    "LiveGenerationConfig.translation_config": refused("speech translation does not run here"),
    "TranslationConfig.echo_target_language": refused("speech translation does not run here"),
    "TranslationConfig.target_language_code": refused("speech translation does not run here"),
    "ProactivityConfig.proactive_audio": refused(
        "proactive audio is not supported by this server", _true
    ),
    "ProactivityConfig.proactive_video": refused(
        "proactive video is not supported by this server", _true
    ),
    "HistoryConfig.initial_history_in_client_content": acted(
        "clientContent up to turnComplete is history, answered by nothing"
    ),
    "RealtimeInputConfig.automatic_activity_detection": acted("the VAD, or client signals"),
    "RealtimeInputConfig.activity_handling": acted("barge-in or not"),
    "RealtimeInputConfig.turn_coverage": acted(
        "audio activity and all video (the default) or only activity; a turn of all input, "
        "silence included, is not built here",
        refusing=lambda v: v is TurnCoverage.TURN_INCLUDES_ALL_INPUT,
    ),
    "RealtimeInputConfig.interim_transcript_timestamp_enabled": noop(
        "timestamps for interim transcripts, and none are sent here: each transcript is final"
    ),
    "AutomaticActivityDetection.disabled": acted("client activity signals"),
    "AutomaticActivityDetection.start_of_speech_sensitivity": acted("the VAD"),
    "AutomaticActivityDetection.end_of_speech_sensitivity": acted("the VAD"),
    "AutomaticActivityDetection.prefix_padding_ms": acted("the VAD"),
    "AutomaticActivityDetection.silence_duration_ms": acted("the VAD"),
    "SessionResumptionConfig.handle": acted("resumes a session"),
    "SessionResumptionConfig.transparent": noop(
        "lastConsumedClientMessageIndex is not sent; a resumed session answers its last turn "
        "again on its own, so the client has nothing to replay"
    ),
    "ContextWindowCompression.trigger_tokens": acted("the sliding window"),
    "ContextWindowCompression.sliding_window": acted("the sliding window"),
    "SlidingWindow.target_tokens": acted("the sliding window"),
    "AudioTranscriptionConfig.language_codes": acted(ENGLISH_ONLY, refusing=_not_english),
    "AudioTranscriptionConfig.language_auto": noop(
        "deprecated by Gemini: detection is already the default; here it finds English"
    ),
    "AudioTranscriptionConfig.language_hints": acted("as languageCodes"),
    "LanguageHints.language_codes": acted(ENGLISH_ONLY, refusing=_not_english),
    "AudioTranscriptionConfig.custom_vocabulary": noop(
        "a hint that biases recognition; Whisper decodes here without one"
    ),
    "AudioTranscriptionConfig.adaptation_phrases": noop(
        "a hint that biases recognition; Whisper decodes here without one"
    ),
    "AudioTranscriptionConfig.word_timestamp": refused("transcripts carry no timestamps", _true),
    "AudioTranscriptionConfig.diarization": refused("speakers are not told apart here", _true),
    "AudioTranscriptionConfig.mode": acted(
        "VERBATIM (the default) is what is sent; SMART rewriting is not done here",
        refusing=lambda v: v is TranscriptionMode.SMART,
    ),
    "AudioTranscriptionConfig.source_text": refused("SMART rewriting is not done here"),
    "ClientContent.turns": acted("turns"),
    "ClientContent.turn_complete": acted("asks for an answer"),
    "RealtimeInput.audio": acted("heard"),
    "RealtimeInput.video": acted("seen"),
    "RealtimeInput.text": acted("a turn"),
    "RealtimeInput.activity_start": acted("manual activity"),
    "RealtimeInput.activity_end": acted("manual activity"),
    "RealtimeInput.audio_stream_end": acted("flushes the VAD"),
    "RealtimeInput.media_chunks": acted("audio or images"),
    "ToolResponse.function_responses": acted("function results"),
    # --- ephemeral tokens ---------------------------------------------------------------------
    "CreateAuthTokenRequest.uses": acted("sessions a token opens"),
    "CreateAuthTokenRequest.expire_time": acted("the token's end"),
    "CreateAuthTokenRequest.new_session_expire_time": acted("when it may start sessions"),
    "CreateAuthTokenRequest.bidi_generate_content_setup": acted("locked setup fields"),
    "CreateAuthTokenRequest.field_mask": acted("which fields are locked"),
}


def decision_for(model: type[BaseModel], field: str) -> Decision | None:
    """The decision for `model.field`, its own or inherited."""
    for klass in model.__mro__:
        found = DECISIONS.get(f"{klass.__name__}.{field}") or DECISIONS.get(f"{klass.__name__}.*")
        if found is not None:
            return found
    return None


def refusals(message: BaseModel, where: str = "") -> Iterator[str]:
    """Each field of `message` (nested fields too) set to a value this server refuses, as
    "path: why" in wire names."""
    for name, info in type(message).model_fields.items():
        value = getattr(message, name)
        if value is None:
            continue
        path = f"{where}.{info.alias or name}" if where else (info.alias or name)
        decision = decision_for(type(message), name)
        if decision is not None and decision.refuses is not None and decision.refuses(value):
            yield f"{path} is not supported: {decision.note}"
        if decision is None or decision.kind is not Kind.NOOP:  # what is inert holds nothing
            yield from _nested(value, path)


def _nested(value: Any, path: str) -> Iterator[str]:
    if isinstance(value, BaseModel):
        yield from refusals(value, path)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _nested(item, f"{path}[{i}]")


def first_refusal(message: BaseModel) -> str | None:
    return next(refusals(message), None)
