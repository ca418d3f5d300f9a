"""Client schemas → GBNF: escaped, bounded, and refused (400, by place) when they cannot work.

Whether llama.cpp parses and samples what is built here is tested against the real engine in
tests/integration/test_grammar_engine.py; these tests need no model.
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from flashlive.api.errors import http_status
from flashlive.errors import InvalidArgument
from flashlive.generation.grammar import MAX_ALTERNATIVES, schema_grammar
from flashlive.generation.pattern import MAX_REPEAT, gbnf_literal, pattern_expression
from flashlive.generation.schema import to_json_schema
from flashlive.protocol.content import Schema

RULE = re.compile(r"^([a-z][a-z0-9-]*) ::= (.*)$")


def rules(grammar: str) -> dict[str, str]:
    parsed = dict(RULE.match(line).groups() for line in grammar.splitlines())  # type: ignore[union-attr]
    assert "root" in parsed
    return parsed


def outside_literals(body: str) -> str:
    """A rule body with its string literals and character classes taken out."""
    body = re.sub(r'"(?:[^"\\]|\\.)*"', '""', body)
    return re.sub(r"\[(?:[^\]\\]|\\.)*\]", "[]", body)


@pytest.mark.parametrize(
    ("schema", "words"),
    [
        ({"enum": []}, "enum must be a non-empty list"),
        ({"anyOf": []}, "anyOf must be a non-empty list"),
        ({"oneOf": []}, "oneOf must be a non-empty list"),
        ({"type": []}, "type must not be an empty list"),
        ({"type": "strin"}, "is not one of"),
        ({"type": "string", "pattern": "["}, "not a valid regular expression"),
        ({"type": "string", "pattern": "(?=x)y"}, "'(?=' in the pattern is not supported"),
        ({"type": "string", "pattern": "(a)\\1"}, "escape \\1"),
        ({"type": "string", "pattern": "a^b"}, "anchor"),
        ({"type": "string", "pattern": "^a|b$"}, "anchor on one alternative"),
        ({"type": "string", "pattern": "a{99999}"}, "repetition"),
        ({"type": "string", "pattern": "a{3,1}"}, "not a valid regular expression"),
        ({"type": "string", "pattern": 5}, "pattern must be a string"),
        ({"type": "string", "maxLength": MAX_REPEAT + 1}, "maxLength is at most"),
        ({"type": "string", "minLength": 3, "maxLength": 2}, "below minLength"),
        ({"type": "string", "minLength": -1}, "non-negative integer"),
        ({"type": "array", "items": {}, "minItems": 10**8}, "minItems is at most"),
        ({"type": "array", "items": False, "minItems": 1}, "items false"),
        ({"type": "integer", "minimum": 5, "maximum": 1}, "between its minimum and maximum"),
        ({"type": "number", "exclusiveMinimum": 1, "maximum": 1}, "between"),
        ({"type": "number", "multipleOf": 0}, "multipleOf must be positive"),
        ({"type": "integer", "enum": ["a"]}, "no enum or const value is of the schema's type"),
        ({"$ref": "#/$defs/missing"}, "names nothing"),
        ({"$ref": "http://example.com/s.json"}, "only references inside the schema"),
        ({"properties": {}, "required": ["x"], "additionalProperties": False}, "forbids"),
        ({"type": "object", "required": "x"}, "list of property names"),
        ({"type": "object", "properties": []}, "properties must be an object"),
        ({"not": {"type": "string"}}, "not is not supported"),
        ({"type": "object", "patternProperties": {}}, "patternProperties is not supported"),
        ({"if": {}, "then": {}}, "is not supported"),
        ({"allOf": [{}, {}]}, "allOf of more than one"),
        ({"anyOf": [{}], "type": "string"}, "anyOf next to type"),
        ({"properties": {}, "items": {}}, "mixes object and array"),
        (False, "matches nothing"),
        ([], "a schema is an object"),
        ({"enum": list(range(MAX_ALTERNATIVES + 1))}, "more than"),
        ({"prefixItems": []}, "prefixItems must be a non-empty list"),
    ],
)
def test_schemas_that_cannot_work_are_400s_naming_the_place(schema: Any, words: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        schema_grammar({"type": "object", "properties": {"x": schema}}, "responseJsonSchema")
    assert http_status(info.value) == 400
    assert words in info.value.message
    assert info.value.message.startswith("responseJsonSchema")


def test_a_schema_nested_past_the_limit_is_refused_not_recursed() -> None:
    schema: dict[str, Any] = {"type": "string"}
    for _ in range(500):
        schema = {"type": "array", "items": schema}
    with pytest.raises(InvalidArgument, match="nest more than"):
        schema_grammar(schema, "s")


def test_reference_chains_are_bounded_too() -> None:
    defs = {f"d{i}": {"type": "array", "items": {"$ref": f"#/$defs/d{i + 1}"}} for i in range(200)}
    defs["d200"] = {"type": "string"}
    with pytest.raises(InvalidArgument, match="nest more than"):
        schema_grammar({"$defs": defs, "$ref": "#/$defs/d0"}, "s")


def test_client_strings_reach_the_grammar_only_inside_escaped_literals() -> None:
    tricky = ['a"b', "c\\d", "e\nf", 'g" ::= root', "<start_of_turn>", "h\u2028i", "]"]
    schema = {
        "type": "object",
        "properties": {name: {"type": "string", "enum": tricky} for name in tricky},
        "required": tricky[:2],
    }
    grammar = schema_grammar(schema, "s")
    for name, body in rules(grammar).items():
        assert re.fullmatch(r"root|r\d+|ref\d+|[a-z][a-z-]*", name)
        assert "::=" not in outside_literals(body) and "\n" not in body
    assert grammar.count("\n") == len(rules(grammar))
    for text in tricky:
        assert text not in outside_literals(grammar)
    assert gbnf_literal('"a\\b"') == '"\\x22a\\x5Cb\\x22"'


def test_enum_values_are_written_as_json_strings() -> None:
    grammar = schema_grammar({"type": "string", "enum": ['q"', "x\\", "a\nb"]}, "s")
    body = rules(grammar)[rules(grammar)["root"]]
    # JSON text: "q\"" → GBNF escapes for its quote and backslash bytes.
    assert '"\\x22q\\x5C\\x22\\x22"' in body
    assert '"\\x22x\\x5C\\x5C\\x22"' in body
    assert '"\\x22a\\x5Cnb\\x22"' in body


def test_gemini_schema_with_an_empty_any_of_is_refused() -> None:
    with pytest.raises(InvalidArgument, match="anyOf must not be empty"):
        to_json_schema(Schema.model_validate({"anyOf": []}))


@pytest.mark.parametrize(
    "schema",
    [
        {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]},
        {"$defs": {"N": {"properties": {"n": {"$ref": "#/$defs/N"}}}}, "$ref": "#/$defs/N"},
        {"type": ["string", "null"], "maxLength": 3},
        {"type": "array", "prefixItems": [{"type": "integer"}], "items": {"type": "string"}},
        {
            "anyOf": [
                {"type": "string", "format": "date-time"},
                {"type": "string", "format": "uuid"},
            ]
        },
        {"allOf": [{"type": "boolean"}], "description": "pydantic's old style"},
        {"type": "number", "minimum": 0, "maximum": 1, "uniqueItems": True, "title": "t"},
        {"type": "object", "additionalProperties": {"type": "integer"}},
        {"enum": [1, "a", None, [1], {"k": 2}]},
        {"const": "x", "nullable": True},
        True,
        {},
    ],
)
def test_supported_schemas_build_a_grammar_with_a_root(schema: Any) -> None:
    grammar = schema_grammar(schema, "s")
    defined = rules(grammar)
    used = set(
        re.findall(r"[a-z][a-z0-9-]*", " ".join(outside_literals(b) for b in defined.values()))
    )
    assert used <= set(defined)


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        ("^abc$", '("a" "b" "c")'),
        ("^a|b$", None),
        ("^[0-9]{2,4}$", "(([0-9]){2,4})"),
        ("^x+?$", '(("x")+)'),
        ('^"$', '("\\x5C\\x22")'),
        ("^\\\\$", '("\\x5C\\x5C")'),
        ("^\\n$", '("\\x5Cn")'),
    ],
)
def test_patterns_translate_to_json_text(pattern: str, expected: str | None) -> None:
    if expected is None:
        with pytest.raises(InvalidArgument):
            pattern_expression(pattern, "p")
    else:
        assert pattern_expression(pattern, "p") == expected


def test_an_unanchored_pattern_matches_anywhere() -> None:
    expression = pattern_expression("ab", "p")
    assert expression.startswith("(") and expression.endswith("*")
    assert '("a" "b")' in expression


def test_classes_never_yield_a_raw_quote_backslash_or_control() -> None:
    positive = pattern_expression("^[\\x00-\\x7F]$", "p")
    assert '"\\x5C\\x22"' in positive and '"\\x5C\\x5C"' in positive and '"\\x5Cn"' in positive
    assert "[\\x20-\\x21\\x23-\\x5B\\x5D-\\x7E]" in positive
    negative = pattern_expression("^[^a]$", "p")
    assert negative == "([^\\x00-\\x1F\\x22\\x5Ca\\x7F])"
