"""Model aliases: other names a served model answers to, such as the Gemini models apps name.

Libraries built on the SDK (LangChain, LiteLLM, Pipecat) call `gemini-2.5-flash` and the like;
`--model-alias 'gemini-*=qwen2.5-coder-1.5b-instruct'` lets them run unchanged. A pattern is
either a name or a shell-style glob (`*`, `?`, `[...]`), matched case-sensitively; a real model
id always wins over an alias, and among aliases the first match does.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from fnmatch import fnmatchcase

from flashlive.protocol.base import model_id

_GLOB_CHARS = frozenset("*?[")


@dataclass(frozen=True)
class ModelAlias:
    pattern: str  # a model name or a glob, without "models/"
    target: str  # the id of the model that answers, without "models/"

    @property
    def is_glob(self) -> bool:
        return any(c in _GLOB_CHARS for c in self.pattern)

    def matches(self, name: str) -> bool:
        return fnmatchcase(name, self.pattern)


def parse_aliases(entries: Iterable[str]) -> list[ModelAlias]:
    """`PATTERN=MODEL` entries (each may also be a comma-separated list of them).

    Raises ValueError naming the entry that is not of that form.
    """
    aliases = []
    for entry in entries:
        for item in entry.split(","):
            if not item.strip():
                continue
            pattern, sep, target = (p.strip() for p in item.partition("="))
            pattern, target = model_id(pattern), model_id(target)
            if not sep or not pattern or not target:
                raise ValueError(f"model alias {item.strip()!r} is not PATTERN=MODEL")
            aliases.append(ModelAlias(pattern, target))
    return aliases
