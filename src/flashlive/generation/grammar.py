"""A client's JSON Schema as the GBNF grammar llama.cpp samples under.

Every schema a client can send (responseSchema, responseJsonSchema, a text/x.enum list,
function parameters under mode ANY, the same in a Live setup) becomes a grammar here, before
the engine is asked for anything. What the client wrote reaches the grammar only as escaped
string literals (property names, enum values, constants) and through `pattern.py` (patterns);
rule names are ours. A schema that cannot be satisfied, that asks for what a grammar cannot
express, or that is too large to sample under in reasonable time is refused with a 400 naming
the keyword and where it is. The engine then parses the grammar once more before sampling
(`engine.check_grammar`), so a grammar llama.cpp would reject can never reach its sampler.

Value constraints a grammar does not enforce (minimum, maximum, exclusiveMinimum,
exclusiveMaximum, multipleOf, uniqueItems) are accepted: the schema is also in the prompt,
and the README says they are not enforced.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

from flashlive.errors import InvalidArgument
from flashlive.generation.json_rules import PRIMITIVES, STRING_FORMATS
from flashlive.generation.pattern import (
    MAX_REPEAT,
    gbnf_literal,
    json_fragment,
    pattern_expression,
)

MAX_SCHEMA_DEPTH = 32  # nested subschemas, references followed included
MAX_SCHEMA_NODES = 2000  # subschemas visited in all
MAX_ALTERNATIVES = 256  # enum values, anyOf / oneOf branches, types of one schema
MAX_GRAMMAR_CHARS = 512 * 1024

ANNOTATIONS = frozenset(
    {
        "title", "description", "default", "examples", "example", "$schema", "$id", "$anchor",
        "$comment", "deprecated", "readOnly", "writeOnly", "contentMediaType",
        "contentEncoding", "discriminator", "$defs", "definitions", "propertyOrdering",
    }
)  # fmt: skip
UNENFORCED = frozenset(
    {"minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf", "uniqueItems"}
)
OBJECT_WORDS = frozenset({"properties", "required", "additionalProperties"})
ARRAY_WORDS = frozenset({"items", "prefixItems", "minItems", "maxItems"})
STRING_WORDS = frozenset({"pattern", "minLength", "maxLength"})
UNION_WORDS = ("anyOf", "oneOf", "allOf")  # in this order: error messages are stable
VALUE_WORDS = frozenset({"$ref", "type", "enum", "const", "nullable", "format"})
KNOWN = (
    ANNOTATIONS
    | UNENFORCED
    | OBJECT_WORDS
    | ARRAY_WORDS
    | STRING_WORDS
    | VALUE_WORDS
    | frozenset(UNION_WORDS)
)
TYPES = ("string", "number", "integer", "boolean", "null", "object", "array")


def schema_grammar(schema: Any, where: str) -> str:
    """The GBNF grammar of JSON text that fits `schema`; InvalidArgument when there is none."""
    builder = _Builder(schema, where)
    root = builder.visit(schema, where, 0)
    grammar = builder.text(root)
    if len(grammar) > MAX_GRAMMAR_CHARS:
        raise InvalidArgument(f"{where} is too large to decode under (a grammar over 512 KiB)")
    return grammar


@dataclass
class _Builder:
    root: Any
    where: str
    rules: dict[str, str] = field(default_factory=dict)  # name → body
    names: dict[str, str] = field(default_factory=dict)  # body → name, to share equal rules
    refs: dict[str, str] = field(default_factory=dict)  # "#/..." → the rule it became
    visited: int = 0

    def text(self, root: str) -> str:
        lines = [f"root ::= {root}"] + [f"{name} ::= {body}" for name, body in self.rules.items()]
        return "\n".join(lines) + "\n"

    def rule(self, body: str) -> str:
        """A rule named by us for `body` (one rule per distinct body)."""
        if body in self.names:
            return self.names[body]
        name = f"r{len(self.names) + 1}"
        self.names[body] = name
        self.rules[name] = body
        return name

    def primitive(self, name: str) -> str:
        if name not in self.rules:
            body, needs = PRIMITIVES[name]
            self.rules[name] = body
            for need in needs:
                self.primitive(need)
        return name

    # --- schemas ---------------------------------------------------------------------------

    def visit(self, schema: Any, where: str, depth: int) -> str:
        self.visited += 1
        if self.visited > MAX_SCHEMA_NODES:
            raise InvalidArgument(f"{self.where} has more than {MAX_SCHEMA_NODES} subschemas")
        if depth > MAX_SCHEMA_DEPTH:
            raise InvalidArgument(f"{where}: schemas nest more than {MAX_SCHEMA_DEPTH} deep")
        if schema is True:
            return self.primitive("value")
        if schema is False:
            raise InvalidArgument(f"{where}: the schema false matches nothing")
        if not isinstance(schema, dict):
            raise InvalidArgument(f"{where}: a schema is an object, not {_kind(schema)}")
        unknown = sorted(k for k in schema if k not in KNOWN)
        if unknown:
            raise InvalidArgument(f"{where}.{_shown(unknown[0])} is not supported in a schema")
        if schema.get("nullable") is True:
            rest = {k: v for k, v in schema.items() if k != "nullable"}
            return self.union([rest, {"type": "null"}], where, depth)
        if "$ref" in schema:
            return self.reference(schema, where, depth)
        if any(k in schema for k in UNION_WORDS):
            return self.combination(schema, where, depth)
        if "const" in schema:
            return self.constants([schema["const"]], schema, where)
        if "enum" in schema:
            values = schema["enum"]
            if not isinstance(values, list) or not values:
                raise InvalidArgument(f"{where}.enum must be a non-empty list")
            return self.constants(values, schema, where)
        return self.typed(schema, where, depth)

    def reference(self, schema: dict[str, Any], where: str, depth: int) -> str:
        ref = schema["$ref"]
        others = set(schema) - ANNOTATIONS - UNENFORCED - {"$ref"}
        if others:
            raise InvalidArgument(f"{where}: $ref next to {sorted(others)[0]} is not supported")
        if not isinstance(ref, str) or not (ref == "#" or ref.startswith("#/")):
            raise InvalidArgument(f"{where}.$ref: only references inside the schema (#/...) work")
        if ref in self.refs:
            return self.refs[ref]
        target = _resolve(self.root, ref, where)
        name = f"ref{len(self.refs) + 1}"
        self.refs[ref] = name
        self.rules[name] = ""  # reserved: a reference may lead back here
        self.rules[name] = self.visit(target, ref, depth + 1)
        return name

    def combination(self, schema: dict[str, Any], where: str, depth: int) -> str:
        words = [k for k in UNION_WORDS if k in schema]
        structural = set(schema) - ANNOTATIONS - UNENFORCED - set(UNION_WORDS)
        if len(words) > 1 or structural:
            extra = sorted(set(words[1:]) | structural)[0]
            raise InvalidArgument(f"{where}: {words[0]} next to {extra} is not supported")
        word = words[0]
        branches = schema[word]
        if not isinstance(branches, list) or not branches:
            raise InvalidArgument(f"{where}.{word} must be a non-empty list")
        if word == "allOf":
            if len(branches) != 1:
                raise InvalidArgument(f"{where}.allOf of more than one schema is not supported")
            return self.visit(branches[0], f"{where}.allOf[0]", depth + 1)
        return self.union(branches, f"{where}.{word}", depth)

    def union(self, branches: list[Any], where: str, depth: int) -> str:
        if len(branches) > MAX_ALTERNATIVES:
            raise InvalidArgument(f"{where} has more than {MAX_ALTERNATIVES} alternatives")
        names = [self.visit(b, f"{where}[{i}]", depth + 1) for i, b in enumerate(branches)]
        return self.rule(" | ".join(dict.fromkeys(names)))

    def constants(self, values: list[Any], schema: dict[str, Any], where: str) -> str:
        if len(values) > MAX_ALTERNATIVES:
            raise InvalidArgument(f"{where}.enum has more than {MAX_ALTERNATIVES} values")
        types = _types(schema, where)
        fitting = [v for v in values if types is None or _fits(_type_of(v), types)]
        if not fitting:
            raise InvalidArgument(f"{where}: no enum or const value is of the schema's type")
        texts = dict.fromkeys(json.dumps(v, ensure_ascii=False, sort_keys=False) for v in fitting)
        space = self.primitive("space")
        return self.rule(" | ".join(f"{gbnf_literal(t)} {space}" for t in texts))

    def typed(self, schema: dict[str, Any], where: str, depth: int) -> str:
        types = _types(schema, where) or _implied_types(schema, where)
        if types is None:
            return self.primitive("value")
        rules = [self.of_type(t, schema, where, depth) for t in types]
        return rules[0] if len(rules) == 1 else self.rule(" | ".join(dict.fromkeys(rules)))

    def of_type(self, kind: str, schema: dict[str, Any], where: str, depth: int) -> str:
        _check_numbers(schema, where)
        if kind == "object":
            return self.object(schema, where, depth)
        if kind == "array":
            return self.array(schema, where, depth)
        if kind == "string":
            return self.string(schema, where)
        return self.primitive(kind)

    # --- strings -----------------------------------------------------------------------------

    def string(self, schema: dict[str, Any], where: str) -> str:
        space = self.primitive("space")
        low, high = _bounds(schema, "minLength", "maxLength", where)
        pattern = schema.get("pattern")
        if pattern is not None:
            if not isinstance(pattern, str):
                raise InvalidArgument(f"{where}.pattern must be a string")
            if low or high is not None:
                raise InvalidArgument(
                    f"{where}: pattern with minLength / maxLength is not supported"
                )
            inner = pattern_expression(pattern, f"{where}.pattern")
            return self.rule(f'"\\"" {inner} "\\"" {space}')
        shape = schema.get("format")
        if shape in STRING_FORMATS and not low and high is None:
            return self.rule(f'"\\"" {self.primitive(str(shape))} "\\"" {space}')
        if not low and high is None:
            return self.primitive("string")
        char = self.primitive("char")
        return self.rule(f'"\\"" {_repeat(char, low, high)} "\\"" {space}')

    # --- arrays ------------------------------------------------------------------------------

    def array(self, schema: dict[str, Any], where: str, depth: int) -> str:
        space = self.primitive("space")
        low, high = _bounds(schema, "minItems", "maxItems", where)
        prefix = schema.get("prefixItems")
        items = schema.get("items", True)
        if prefix is not None:
            return self.tuple_array(prefix, items, (low, high), where, depth)
        if items is False:
            if low:
                raise InvalidArgument(f"{where}: items false leaves no room for minItems {low}")
            return self.rule(f'"[" {space} "]" {space}')
        item = self.visit(items, f"{where}.items", depth + 1)
        return self.rule(f'"[" {space} {_listed(item, low, high, space)} "]" {space}')

    def tuple_array(
        self, prefix: Any, items: Any, bounds: tuple[int, int | None], where: str, depth: int
    ) -> str:
        if not isinstance(prefix, list) or not prefix:
            raise InvalidArgument(f"{where}.prefixItems must be a non-empty list")
        if bounds != (0, None):
            raise InvalidArgument(f"{where}: prefixItems with minItems / maxItems is not supported")
        space = self.primitive("space")
        parts = [
            self.visit(p, f"{where}.prefixItems[{i}]", depth + 1) for i, p in enumerate(prefix)
        ]
        body = f' "," {space} '.join(parts)
        if items is not False:
            rest = self.visit(items, f"{where}.items", depth + 1)
            body += f' ("," {space} {rest})*'
        return self.rule(f'"[" {space} {body} "]" {space}')

    # --- objects -----------------------------------------------------------------------------

    def object(self, schema: dict[str, Any], where: str, depth: int) -> str:
        space = self.primitive("space")
        properties = schema.get("properties", {})
        required = schema.get("required", [])
        extra = schema.get("additionalProperties")
        if not isinstance(properties, dict):
            raise InvalidArgument(f"{where}.properties must be an object")
        if not isinstance(required, list) or not all(isinstance(r, str) for r in required):
            raise InvalidArgument(f"{where}.required must be a list of property names")
        if not properties and not required and extra in (None, True):
            return self.primitive("object")
        missing = [r for r in required if r not in properties]
        if missing and extra is False:
            raise InvalidArgument(
                f"{where}.required names {_shown(missing[0])}, which properties does not have "
                "and additionalProperties false forbids"
            )
        ordered = _ordered(properties, schema.get("propertyOrdering"))
        slots = [
            (self.pair(name, properties.get(name, True), f"{where}.properties", depth), "one")
            for name in [*(n for n in ordered if n in required), *dict.fromkeys(missing)]
        ]
        slots += [
            (self.pair(name, properties[name], f"{where}.properties", depth), "maybe")
            for name in ordered
            if name not in required
        ]
        if extra not in (None, False):
            value = self.visit(extra, f"{where}.additionalProperties", depth + 1)
            string = self.primitive("string")
            slots.append((self.rule(f'{string} ":" {space} {value}'), "many"))
        return self.rule(f'"{{" {space} {self.members(slots, space)} "}}" {space}')

    def pair(self, name: str, schema: Any, where: str, depth: int) -> str:
        value = self.visit(schema, f"{where}.{_shown(name)}", depth + 1)
        key = gbnf_literal(json.dumps(name, ensure_ascii=False))
        return self.rule(f'{key} {self.primitive("space")} ":" {self.primitive("space")} {value}')

    def members(self, slots: list[tuple[str, str]], space: str) -> str:
        """Comma-separated pairs, slot by slot: "one" exactly once, "maybe" at most once,
        "many" any number of times (required slots come first)."""
        comma = f'"," {space}'
        tails = [""]  # tails[k]: what may follow once something was written, from slot n-k
        for pair, times in reversed(slots):
            after = tails[-1]
            mark = {"one": "", "maybe": "?", "many": "*"}[times]
            tails.append(self.rule(f"({comma} {pair}){mark} {after}".strip()))
        tails.reverse()  # tails[i]: from slot i
        if not slots:
            return ""
        first, times = slots[0]
        if times == "one":
            return f"{first} {tails[1]}".strip()
        starts = [
            f"{pair} " + (f"({comma} {pair})* " if times == "many" else "") + tails[i + 1]
            for i, (pair, times) in enumerate(slots)
        ]
        return "(" + " | ".join(s.strip() for s in starts) + ")?"


def _resolve(root: Any, ref: str, where: str) -> Any:
    node = root
    for raw in ref[2:].split("/") if ref != "#" else []:
        step = raw.replace("~1", "/").replace("~0", "~")
        if isinstance(node, dict) and step in node:
            node = node[step]
        elif isinstance(node, list) and step.isascii() and step.isdigit() and int(step) < len(node):
            node = node[int(step)]
        else:
            raise InvalidArgument(f"{where}.$ref {_shown(ref)} names nothing in the schema")
    return node


def _types(schema: dict[str, Any], where: str) -> list[str] | None:
    given = schema.get("type")
    if given is None:
        return None
    listed = given if isinstance(given, list) else [given]
    if not listed:
        raise InvalidArgument(f"{where}.type must not be an empty list")
    for kind in listed:
        if kind not in TYPES:
            raise InvalidArgument(
                f"{where}.type {_shown(str(kind))} is not one of {', '.join(TYPES)}"
            )
    return list(dict.fromkeys(listed))


def _implied_types(schema: dict[str, Any], where: str) -> list[str] | None:
    """The type that keywords imply when `type` is missing ({"properties": ...} is an object)."""
    implied = [
        kind
        for kind, words in (
            ("object", OBJECT_WORDS),
            ("array", ARRAY_WORDS),
            ("string", STRING_WORDS),
        )
        if any(w in schema for w in words)
    ]
    if len(implied) > 1:
        raise InvalidArgument(
            f"{where} mixes {implied[0]} and {implied[1]} keywords without a type"
        )
    if not implied and schema.get("format") in STRING_FORMATS:
        return ["string"]
    return implied or None


def _fits(kind: str, types: list[str]) -> bool:
    return kind in types or (kind == "integer" and "number" in types)


def _type_of(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "integer" if value.is_integer() else "number"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list) else "object"


def _bounds(
    schema: dict[str, Any], low_word: str, high_word: str, where: str
) -> tuple[int, int | None]:
    low = _count(schema.get(low_word), f"{where}.{low_word}") or 0
    high = _count(schema.get(high_word), f"{where}.{high_word}")
    if high is not None and high < low:
        raise InvalidArgument(f"{where}: {high_word} {high} is below {low_word} {low}")
    return low, high


def _count(value: Any, where: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, str) and value.isascii() and value.isdigit():
        value = int(value)  # int64 fields travel as strings in the Gemini Schema
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise InvalidArgument(f"{where} must be a non-negative integer")
    if value > MAX_REPEAT:
        raise InvalidArgument(f"{where} is at most {MAX_REPEAT} here")
    return value


def _check_numbers(schema: dict[str, Any], where: str) -> None:
    """Numeric bounds are not enforced, but they must be numbers and leave something to pick."""
    found: dict[str, float] = {}
    for word in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf"):
        value = schema.get(word)
        if value is None:
            continue
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
        ):
            raise InvalidArgument(f"{where}.{word} must be a number")
        found[word] = float(value)
    low = max(found.get("minimum", -math.inf), found.get("exclusiveMinimum", -math.inf))
    high = min(found.get("maximum", math.inf), found.get("exclusiveMaximum", math.inf))
    exclusive = "exclusiveMinimum" in found or "exclusiveMaximum" in found
    if low > high or (low == high and exclusive):
        raise InvalidArgument(f"{where}: no number lies between its minimum and maximum")
    if found.get("multipleOf", 1.0) <= 0:
        raise InvalidArgument(f"{where}.multipleOf must be positive")


def _ordered(properties: dict[str, Any], ordering: Any) -> list[str]:
    if not isinstance(ordering, list):
        return list(properties)
    first = [k for k in ordering if isinstance(k, str) and k in properties]
    return list(dict.fromkeys([*first, *properties]))


def _repeat(item: str, low: int, high: int | None) -> str:
    if high is None:
        return f"{item}{{{low},}}"
    return f"{item}{{{low}}}" if low == high else f"{item}{{{low},{high}}}"


def _listed(item: str, low: int, high: int | None, space: str) -> str:
    """`low` to `high` items separated by commas, inside brackets already written."""
    comma = f'"," {space}'
    if high == 0:
        return ""
    if low == 0:
        more = _repeat(f"({comma} {item})", 0, None if high is None else high - 1)
        return f"({item} {more})?"
    return f"{item} " + _repeat(f"({comma} {item})", low - 1, None if high is None else high - 1)


def _kind(value: Any) -> str:
    return {list: "a list", str: "a string", int: "a number", float: "a number"}.get(
        type(value), "null" if value is None else type(value).__name__
    )


def _shown(text: str, limit: int = 40) -> str:
    printable = json.dumps(text)[1:-1]
    return printable if len(printable) <= limit else printable[: limit - 3] + "..."


__all__ = ["json_fragment", "schema_grammar"]
