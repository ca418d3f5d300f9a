"""Gemini's OpenAPI-subset Schema → JSON Schema, the form constrained decoding takes."""

from __future__ import annotations

from typing import Any

from flashlive.errors import InvalidArgument
from flashlive.protocol.content import Schema, SchemaType

_SIMPLE = {
    SchemaType.STRING: "string",
    SchemaType.NUMBER: "number",
    SchemaType.INTEGER: "integer",
    SchemaType.BOOLEAN: "boolean",
    SchemaType.ARRAY: "array",
    SchemaType.OBJECT: "object",
    SchemaType.NULL: "null",
}


def to_json_schema(schema: Schema, where: str = "schema") -> dict[str, Any]:
    out: dict[str, Any] = {}
    if schema.any_of is not None:
        if not schema.any_of:
            raise InvalidArgument(f"{where}.anyOf must not be empty")
        out["anyOf"] = [
            to_json_schema(s, f"{where}.anyOf[{i}]") for i, s in enumerate(schema.any_of)
        ]
    if schema.type is not None and schema.type is not SchemaType.TYPE_UNSPECIFIED:
        out["type"] = _SIMPLE[schema.type]
    if schema.enum is not None:
        if not schema.enum:
            raise InvalidArgument(f"{where}.enum must not be empty")
        out["enum"] = list(schema.enum)
        out.setdefault("type", "string")
    if schema.type is SchemaType.OBJECT or schema.properties is not None:
        _add_object(out, schema, where)
    if schema.type is SchemaType.ARRAY:
        if schema.items is None:
            raise InvalidArgument(f"{where}: an ARRAY schema needs items")
        out["items"] = to_json_schema(schema.items, f"{where}.items")
    for key, value in (
        ("minItems", schema.min_items),
        ("maxItems", schema.max_items),
        ("minLength", schema.min_length),
        ("maxLength", schema.max_length),
        ("minimum", schema.minimum),
        ("maximum", schema.maximum),
    ):
        if value is not None:
            out[key] = _number(value, f"{where}.{key}")
    if schema.pattern is not None:
        out["pattern"] = schema.pattern
    if schema.format in ("date-time", "date", "time", "uuid"):
        out["format"] = schema.format
    if schema.description:
        out["description"] = schema.description
    if schema.nullable:
        out = {"anyOf": [out, {"type": "null"}]}
    return out


def _add_object(out: dict[str, Any], schema: Schema, where: str) -> None:
    """An object's properties (in their given order), required names and closedness."""
    out["type"] = "object"
    props = schema.properties or {}
    order = [k for k in (schema.property_ordering or []) if k in props]
    order += [k for k in props if k not in order]
    out["properties"] = {k: to_json_schema(props[k], f"{where}.properties.{k}") for k in order}
    required = schema.required or []
    unknown = [r for r in required if r not in props]
    if unknown:
        raise InvalidArgument(f"{where}.required names unknown properties: {unknown}")
    if required:
        out["required"] = list(required)
    out["additionalProperties"] = False


def _number(value: int | float | str, where: str) -> int | float:
    if isinstance(value, str):
        try:
            return int(value)
        except ValueError as exc:
            raise InvalidArgument(f"{where} must be a number, got {value!r}") from exc
    return value


def function_call_schema(functions: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The JSON shape of one call to any of `functions` (name → parameters schema)."""
    variants = [
        {
            "type": "object",
            "properties": {"name": {"const": name}, "arguments": params},
            "required": ["name", "arguments"],
            "additionalProperties": False,
        }
        for name, params in functions.items()
    ]
    return variants[0] if len(variants) == 1 else {"anyOf": variants}
