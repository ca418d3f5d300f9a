"""Conversation → prompt text, per model.

A model whose GGUF carries a chat template is rendered with that template (Jinja2, as
the model was trained). A base model without one gets a plain-text transcript with a
short few-shot preamble: base models continue text well but fall apart on chat turns.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import date
from typing import Any, Literal, Protocol

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment

TOOL_CALL_OPEN = "<tool_call>"
TOOL_CALL_CLOSE = "</tool_call>"


@dataclass(frozen=True)
class ToolCall:
    name: str
    arguments: dict[str, Any]


@dataclass(frozen=True)
class Message:
    role: Literal["system", "user", "assistant", "tool"]
    content: str = ""
    tool_calls: tuple[ToolCall, ...] = ()
    name: str | None = None  # the function a tool message answers


@dataclass(frozen=True)
class ToolSpec:
    name: str
    description: str
    parameters: dict[str, Any]

    def as_openai_tool(self) -> dict[str, Any]:
        return {
            "type": "function",
            "function": {
                "name": self.name,
                "description": self.description,
                "parameters": self.parameters,
            },
        }


@dataclass(frozen=True)
class RenderedPrompt:
    text: str
    stop: tuple[str, ...] = field(default_factory=tuple)


class Formatter(Protocol):
    def render(self, messages: list[Message], tools: list[ToolSpec]) -> RenderedPrompt: ...


def tool_call_json(call: ToolCall) -> str:
    return json.dumps({"name": call.name, "arguments": call.arguments}, ensure_ascii=False)


def describe_tools(tools: list[ToolSpec]) -> str:
    lines = [
        "You may call these functions. To call one, reply with exactly",
        f'{TOOL_CALL_OPEN}{{"name": <function name>, "arguments": {{...}}}}{TOOL_CALL_CLOSE}',
        "and nothing else. Functions:",
    ]
    lines += [json.dumps(t.as_openai_tool()["function"], ensure_ascii=False) for t in tools]
    return "\n".join(lines)


class TemplateFormatter:
    """Renders with the model's own chat template (the GGUF's `tokenizer.chat_template`)."""

    def __init__(self, template: str, *, bos_token: str, eos_token: str) -> None:
        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
        env.globals["raise_exception"] = _raise_template_error
        env.globals["strftime_now"] = lambda fmt: date.today().strftime(fmt)
        self._template = env.from_string(template)
        self._native_tools = "tools" in template
        self._bos = bos_token
        self._eos = eos_token

    def render(self, messages: list[Message], tools: list[ToolSpec]) -> RenderedPrompt:
        wire: list[dict[str, Any]] = []
        for m in messages:
            item: dict[str, Any] = {"role": m.role, "content": m.content}
            if m.tool_calls:
                item["tool_calls"] = [
                    {"type": "function", "function": {"name": c.name, "arguments": c.arguments}}
                    for c in m.tool_calls
                ]
                if not self._native_tools:
                    item["content"] = (m.content + "\n" if m.content else "") + "\n".join(
                        TOOL_CALL_OPEN + tool_call_json(c) + TOOL_CALL_CLOSE for c in m.tool_calls
                    )
            if m.role == "tool" and not self._native_tools:
                item = {"role": "user", "content": f"Result of {m.name}: {m.content}"}
            wire.append(item)
        if tools and not self._native_tools:
            wire = _with_system_text(wire, describe_tools(tools))
        text = self._template.render(
            messages=wire,
            tools=[t.as_openai_tool() for t in tools] if tools and self._native_tools else None,
            add_generation_prompt=True,
            bos_token=self._bos,
            eos_token=self._eos,
        )
        return RenderedPrompt(text=text)


def _with_system_text(wire: list[dict[str, Any]], text: str) -> list[dict[str, Any]]:
    if wire and wire[0]["role"] == "system":
        return [{"role": "system", "content": wire[0]["content"] + "\n\n" + text}, *wire[1:]]
    return [{"role": "system", "content": text}, *wire]


def _raise_template_error(message: str) -> None:
    raise jinja2.TemplateError(message)


PLAIN_PREAMBLE = (
    "A conversation between a curious User and a knowledgeable, helpful Assistant. "
    "The Assistant answers accurately and concisely."
)
PLAIN_EXAMPLES = (
    ("What is the capital of Italy?", "The capital of Italy is Rome."),
    ("Who wrote Romeo and Juliet?", "William Shakespeare wrote Romeo and Juliet."),
)


class PlainFormatter:
    """A plain-text transcript for base models: preamble, two examples, then the conversation."""

    user = "User"
    assistant = "Assistant"

    def render(self, messages: list[Message], tools: list[ToolSpec]) -> RenderedPrompt:
        system = [m.content for m in messages if m.role == "system" and m.content]
        header = [PLAIN_PREAMBLE, *system]
        if tools:
            header.append(describe_tools(tools))
        turns = [f"{self.user}: {q}\n{self.assistant}: {a}" for q, a in PLAIN_EXAMPLES]
        pending: list[str] = []
        for m in messages:
            if m.role == "user":
                pending.append(f"{self.user}: {m.content}")
            elif m.role == "tool":
                pending.append(f"{self.user}: (result of {m.name}) {m.content}")
            elif m.role == "assistant":
                reply = m.content
                for call in m.tool_calls:
                    reply += TOOL_CALL_OPEN + tool_call_json(call) + TOOL_CALL_CLOSE
                pending.append(f"{self.assistant}: {reply}")
                turns.append("\n".join(pending))
                pending = []
        pending.append(f"{self.assistant}:")
        turns.append("\n".join(pending))
        text = "\n".join(header) + "\n\n" + "\n\n".join(turns)
        return RenderedPrompt(text=text, stop=(f"\n{self.user}:", f"\n{self.assistant}:", "\n\n\n"))
