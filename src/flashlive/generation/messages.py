"""Prompt assembly: a request's contents become messages, rendered with the model's formatter,
with client text defused so it can never write a control token."""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace

from flashlive.engine import EngineInfo
from flashlive.errors import InvalidArgument
from flashlive.generation.guard import ControlTokenGuard
from flashlive.generation.prompt import (
    Formatter,
    Message,
    PlainFormatter,
    RenderedPrompt,
    TemplateFormatter,
    ToolCall,
    ToolSpec,
)
from flashlive.models import LoadedModel
from flashlive.protocol.content import Content, Role
from flashlive.protocol.generate import GenerateContentRequest

INLINE_RENDER_CHARS = 64 * 1024  # longer prompts are defused and rendered off the event loop


class Formatters:
    """The formatter and control-token guard of each model, built once."""

    def __init__(self) -> None:
        self._made: dict[str, tuple[Formatter, ControlTokenGuard]] = {}

    def of(self, loaded: LoadedModel) -> tuple[Formatter, ControlTokenGuard]:
        made = self._made.get(loaded.spec.id)
        if made is None:
            info = loaded.engine.info
            made = (
                _formatter(loaded.spec.prompt_style, info),
                ControlTokenGuard(info.control_tokens),
            )
            self._made[loaded.spec.id] = made
        return made


def _formatter(style: str, info: EngineInfo) -> Formatter:
    if style == "template" and info.chat_template:
        return TemplateFormatter(
            info.chat_template, bos_token=info.bos_token, eos_token=info.eos_token
        )
    return PlainFormatter()


def messages_of(request: GenerateContentRequest, *, allow_empty: bool = False) -> list[Message]:
    """The system instruction and contents as messages; function responses are tool messages."""
    if not request.contents and not allow_empty:
        raise InvalidArgument("contents must not be empty")
    messages: list[Message] = []
    if request.system_instruction is not None:
        text, _ = _text_of(request.system_instruction, "systemInstruction", allow_calls=False)
        if text:
            messages.append(Message("system", text))
    for i, content in enumerate(request.contents):
        where = f"contents[{i}]"
        if not content.parts:
            raise InvalidArgument(f"{where} has no parts")
        is_model = content.role is Role.MODEL
        text, calls = _text_of(content, where, allow_calls=is_model)
        if is_model:
            messages.append(Message("assistant", text, tool_calls=tuple(calls)))
            continue
        for part in content.parts:
            if part.function_response is not None:
                fr = part.function_response
                messages.append(Message("tool", json.dumps(fr.response), name=fr.name))
        if text:
            messages.append(Message("user", text))
    return messages


def _text_of(content: Content, where: str, *, allow_calls: bool) -> tuple[str, list[ToolCall]]:
    texts: list[str] = []
    calls: list[ToolCall] = []
    for j, part in enumerate(content.parts):
        kind = part.kind
        if kind == "text":
            if not part.thought:
                texts.append(part.text or "")
        elif kind == "function_call" and allow_calls and part.function_call is not None:
            calls.append(ToolCall(part.function_call.name, part.function_call.args))
        elif kind in ("inline_data", "file_data"):
            blob = part.inline_data or part.file_data
            mime = getattr(blob, "mime_type", None) or "unknown"
            raise InvalidArgument(
                f"{where}.parts[{j}]: {_camel(kind)} ({mime}) is not supported; this server "
                "reads text and inlineData images, audio and video"
            )
        elif kind != "function_response":
            raise InvalidArgument(
                f"{where}.parts[{j}]: {_camel(kind)} parts are not supported here"
            )
    return "".join(texts), calls


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(w.title() for w in rest)


def with_system(messages: list[Message], text: str) -> list[Message]:
    """`text` added to the system message (one is made when there is none)."""
    if messages and messages[0].role == "system":
        return [Message("system", messages[0].content + "\n\n" + text), *messages[1:]]
    return [Message("system", text), *messages]


async def render(
    formatter: Formatter, guard: ControlTokenGuard, messages: list[Message], tools: list[ToolSpec]
) -> RenderedPrompt:
    """The prompt, client text defused; megabytes of it take a while: not on the event loop."""

    def run() -> RenderedPrompt:
        return formatter.render(
            [defused_message(guard, m) for m in messages], [defused_tool(guard, t) for t in tools]
        )

    if sum(len(m.content) for m in messages) <= INLINE_RENDER_CHARS:
        return run()
    return await asyncio.to_thread(run)


def defused_message(guard: ControlTokenGuard, m: Message) -> Message:
    return replace(
        m,
        content=guard.defuse(m.content),
        tool_calls=tuple(
            ToolCall(guard.defuse(c.name), guard.defuse_all(c.arguments)) for c in m.tool_calls
        ),
        name=guard.defuse(m.name) if m.name is not None else None,
    )


def defused_tool(guard: ControlTokenGuard, tool: ToolSpec) -> ToolSpec:
    return replace(
        tool,
        description=guard.defuse(tool.description),
        parameters=guard.defuse_all(tool.parameters),
    )
