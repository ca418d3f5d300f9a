"""What an answer may be: the tools it may call and how (calling mode, allowed functions), the
schema it must fit (responseSchema, an enum), the grammars it is decoded under, and how the calls
in its text are read back."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import secrets
from dataclasses import dataclass
from typing import Any

from flashlive.engine import Engine
from flashlive.errors import InvalidArgument
from flashlive.generation.grammar import schema_grammar
from flashlive.generation.prompt import TOOL_CALL_CLOSE, TOOL_CALL_OPEN, ToolSpec
from flashlive.generation.schema import function_call_schema, to_json_schema
from flashlive.protocol.content import FunctionCall, FunctionCallingMode, Tool
from flashlive.protocol.generate import GenerateContentRequest, GenerationConfig

log = logging.getLogger(__name__)

JSON_MIME = "application/json"
ENUM_MIME = "text/x.enum"
TEXT_MIME = "text/plain"
# An answer (modes AUTO, VALIDATED) that opens with one of these is watched as a possible call;
# one that opens with CALL_STARTS has begun a call: small models open it as bare JSON, or echo
# the tag of the tool list their template shows them (`<tools>`) where the call's belongs.
CALL_STARTS = ("{", "<tool")
CALL_OPENERS = (*CALL_STARTS, "```")
_FENCE = re.compile(r"^```(?:json)?\s*(.*?)\s*```$", re.S)
_TOOL_BLOCK = re.compile(
    re.escape(TOOL_CALL_OPEN) + r"\s*(.*?)\s*(?:" + re.escape(TOOL_CALL_CLOSE) + r"|$)", re.S
)


@dataclass(frozen=True)
class Constraints:
    """A request's tool and schema policy, decided before anything is rendered."""

    mode: FunctionCallingMode  # NONE when no function is declared
    offered: list[ToolSpec]  # the functions the prompt shows (the allowed ones)
    schema: dict[str, Any] | None  # the JSON Schema the answer must fit
    where: str  # where the request gave that schema
    enum_answer: bool  # the answer is one of an enum's strings, given without quotes

    @property
    def forced_call(self) -> bool:
        """The output is one JSON function call (mode ANY)."""
        return self.mode is FunctionCallingMode.ANY

    @property
    def capture_calls(self) -> bool:
        """A free answer is watched for tool calls (modes AUTO, VALIDATED)."""
        return self.mode is FunctionCallingMode.AUTO and bool(self.offered)

    @property
    def functions(self) -> dict[str, dict[str, Any]]:
        return {t.name: t.parameters for t in self.offered}

    @property
    def instruction(self) -> str | None:
        """What the system message tells the model of the schema, if there is one."""
        if self.schema is None:
            return None
        return "Reply only with JSON that fits this JSON schema: " + json.dumps(self.schema)


@dataclass(frozen=True)
class Grammars:
    answer: str | None  # what every sampled token must fit (a schema, a forced call)
    call: str | None  # for a call a free answer begins (modes AUTO, VALIDATED)


def constraints_of(request: GenerateContentRequest, config: GenerationConfig) -> Constraints:
    tools = tool_specs(request.tools)
    mode = calling_mode(request, tools)
    allowed = allowed_functions(request, tools)
    schema, where = response_schema(config)
    if schema is not None and mode is FunctionCallingMode.ANY:
        raise InvalidArgument("a forced function call cannot be combined with a JSON response")
    offered = (
        [t for t in tools if t.name in allowed] if mode is not FunctionCallingMode.NONE else []
    )
    enum_answer = (config.response_mime_type or "").lower() == ENUM_MIME
    return Constraints(mode, offered, schema, where, enum_answer)


async def grammars_of(rules: Constraints, engine: Engine) -> Grammars:
    """The grammars `rules` decode under, each parsed by the engine before any text."""
    schema, where = rules.schema, rules.where
    functions = rules.functions
    if rules.forced_call:
        _check_parameters(functions)
        schema, where = function_call_schema(functions), "functionDeclarations"
    answer = await checked_grammar(engine, schema, where) if schema is not None else None
    call = None
    if rules.capture_calls and schema is None:
        # A free answer may begin a call: its grammar is checked now, before any text.
        _check_parameters(functions)
        schema = function_call_schema(functions)
        call = await checked_grammar(engine, schema, "functionDeclarations")
    return Grammars(answer, call)


def _check_parameters(functions: dict[str, dict[str, Any]]) -> None:
    for name, parameters in functions.items():
        schema_grammar(parameters, f"functionDeclarations[{name}].parameters")


async def checked_grammar(engine: Engine, schema: dict[str, Any], where: str) -> str:
    """The grammar for `schema`, parsed by the engine before anything is sampled under it."""
    grammar = schema_grammar(schema, where)
    if not await asyncio.to_thread(engine.check_grammar, grammar):
        log.warning("the grammar built from %s did not parse:\n%s", where, grammar[:2000])
        raise InvalidArgument(f"{where} cannot be decoded under: its grammar does not parse")
    return grammar


def tool_specs(tools: list[Tool] | None) -> list[ToolSpec]:
    specs: list[ToolSpec] = []
    # Tools of other kinds were refused where the request was parsed (protocol/decisions.py).
    for i, tool in enumerate(tools or []):
        for j, decl in enumerate(tool.function_declarations or []):
            where = f"tools[{i}].functionDeclarations[{j}]"
            if decl.parameters_json_schema is not None:
                params = decl.parameters_json_schema
            elif decl.parameters is not None:
                params = to_json_schema(decl.parameters, f"{where}.parameters")
            else:
                params = {"type": "object", "properties": {}}
            specs.append(ToolSpec(decl.name, decl.description or "", params))
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise InvalidArgument("function declarations must have distinct names")
    return specs


def calling_mode(request: GenerateContentRequest, tools: list[ToolSpec]) -> FunctionCallingMode:
    fcc = request.tool_config.function_calling_config if request.tool_config else None
    mode = fcc.mode if fcc and fcc.mode else FunctionCallingMode.AUTO
    if mode in (FunctionCallingMode.MODE_UNSPECIFIED, FunctionCallingMode.VALIDATED):
        mode = FunctionCallingMode.AUTO
    if mode is FunctionCallingMode.ANY and not tools:
        raise InvalidArgument(
            "functionCallingConfig mode ANY needs at least one function declaration"
        )
    return mode if tools else FunctionCallingMode.NONE


def allowed_functions(request: GenerateContentRequest, tools: list[ToolSpec]) -> set[str]:
    names = {t.name for t in tools}
    fcc = request.tool_config.function_calling_config if request.tool_config else None
    if fcc is None or not fcc.allowed_function_names:
        return names
    unknown = set(fcc.allowed_function_names) - names
    if unknown:
        raise InvalidArgument(f"allowedFunctionNames names undeclared functions: {sorted(unknown)}")
    return set(fcc.allowed_function_names)


def response_schema(config: GenerationConfig) -> tuple[dict[str, Any] | None, str]:
    """The JSON Schema the answer must fit, and where the request gave it."""
    mime = (config.response_mime_type or TEXT_MIME).lower()
    has_schema = config.response_schema is not None or config.response_json_schema is not None
    where = "generationConfig.responseSchema"
    if mime == TEXT_MIME:
        if has_schema:
            raise InvalidArgument("responseSchema needs responseMimeType application/json")
        return None, where
    if mime == ENUM_MIME:
        schema = config.response_schema
        if schema is None or not schema.enum:
            raise InvalidArgument(f"responseMimeType {ENUM_MIME} needs a responseSchema with enum")
        return {"type": "string", "enum": list(schema.enum)}, f"{where}.enum"
    if mime != JSON_MIME:
        raise InvalidArgument(
            f"responseMimeType {config.response_mime_type!r} is not supported; "
            f"use {TEXT_MIME}, {JSON_MIME} or {ENUM_MIME}"
        )
    if config.response_schema is not None and config.response_json_schema is not None:
        raise InvalidArgument("give responseSchema or responseJsonSchema, not both")
    if config.response_json_schema is not None:
        return config.response_json_schema, "generationConfig.responseJsonSchema"
    if config.response_schema is not None:
        return to_json_schema(config.response_schema, where), where
    return {"type": "object"}, where


def opens_call(captured: str | None, call_grammar: str | None) -> bool:
    """Whether a free answer has begun a call: the call marker anywhere, or a call's start
    first. (An answer under a JSON response schema opens with a brace: that is no call.)"""
    return (
        call_grammar is not None
        and captured is not None
        and captured.lstrip().startswith((TOOL_CALL_OPEN, *CALL_STARTS))
    )


def parse_calls(raw: str, functions: dict[str, dict[str, Any]]) -> list[FunctionCall] | None:
    """The calls `raw` writes, each of a declared function; None when it is not all calls."""
    raw = raw.strip()
    if not raw.startswith(TOOL_CALL_OPEN):
        fenced = _FENCE.match(raw)
        raw = TOOL_CALL_OPEN + (fenced.group(1) if fenced else raw) + TOOL_CALL_CLOSE
    calls = []
    for block in _TOOL_BLOCK.findall(raw):
        try:
            data = json.loads(block)
        except json.JSONDecodeError:
            return None
        if not isinstance(data, dict) or data.get("name") not in functions:
            return None
        args = data.get("arguments", data.get("args", {}))
        if not isinstance(args, dict):
            return None
        calls.append(FunctionCall(id=secrets.token_hex(4), name=str(data["name"]), args=args))
    return calls or None


def json_string(raw: str) -> str:
    """The string a JSON answer is (an enum's), or "" when it is not one."""
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        return ""  # cut short by maxOutputTokens: finishReason says so
    return value if isinstance(value, str) else ""
