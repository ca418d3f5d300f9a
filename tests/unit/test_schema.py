import pytest

from flashlive.errors import InvalidArgument
from flashlive.generation.schema import function_call_schema, to_json_schema
from flashlive.protocol.content import Schema


def test_object_schema_converts_with_ordering_and_nullable() -> None:
    schema = Schema.model_validate(
        {
            "type": "OBJECT",
            "properties": {
                "b": {"type": "INTEGER", "minimum": 1},
                "a": {"type": "STRING", "nullable": True},
                "tags": {"type": "ARRAY", "items": {"type": "STRING", "enum": ["x", "y"]}},
            },
            "required": ["a", "b"],
            "propertyOrdering": ["a", "b"],
        }
    )
    out = to_json_schema(schema)
    assert list(out["properties"]) == ["a", "b", "tags"]
    assert out["properties"]["a"] == {"anyOf": [{"type": "string"}, {"type": "null"}]}
    assert out["properties"]["b"] == {"type": "integer", "minimum": 1}
    assert out["properties"]["tags"]["items"] == {"type": "string", "enum": ["x", "y"]}
    assert out["required"] == ["a", "b"]
    assert out["additionalProperties"] is False


def test_lower_case_types_are_accepted() -> None:
    assert to_json_schema(Schema.model_validate({"type": "string"})) == {"type": "string"}


def test_array_without_items_is_rejected() -> None:
    with pytest.raises(InvalidArgument, match="items"):
        to_json_schema(Schema.model_validate({"type": "ARRAY"}))


def test_required_must_name_a_property() -> None:
    schema = Schema.model_validate({"type": "OBJECT", "properties": {}, "required": ["x"]})
    with pytest.raises(InvalidArgument, match="unknown properties"):
        to_json_schema(schema)


def test_function_call_schema_pins_the_name() -> None:
    one = function_call_schema({"f": {"type": "object"}})
    assert one["properties"]["name"] == {"const": "f"}
    two = function_call_schema({"f": {"type": "object"}, "g": {"type": "object"}})
    assert [v["properties"]["name"]["const"] for v in two["anyOf"]] == ["f", "g"]
