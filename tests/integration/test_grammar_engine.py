"""Grammars built from client schemas, against llama.cpp itself (the fast model's vocabulary).

llama.cpp answers a grammar it cannot parse with NULL, and its sampler chain dereferences that
NULL: a `{"enum": []}` schema used to kill the whole server. `check_grammar` parses first; these
tests show it refuses what llama.cpp cannot parse without crashing (in a child process, so a
crash fails the test instead of the suite), and that what the builder makes is accepted by
llama.cpp's grammar exactly for the JSON texts that fit the schema.
"""

from __future__ import annotations

import asyncio
import ctypes
import json
import math
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flashlive.config import Settings
from flashlive.engine import SamplingParams
from flashlive.engine.llamacpp import LlamaCppEngine, LlamaCppOptions
from flashlive.errors import InvalidArgument
from flashlive.generation.grammar import schema_grammar
from flashlive.models import BUILTIN_MODELS, assemble

FAST = next(s for s in BUILTIN_MODELS if s.id == "gemma-3-270m")

# What llama.cpp refuses to parse: what the old converter made of empty enum / anyOf / type
# lists, of property names holding a quote, of a pattern with \d; and grammars it finds
# unsound (undefined rules, left recursion, no root).
UNPARSABLE = [
    'root ::= \nspace ::= " "?',
    'root ::= "\\"a\\\\"b\\"" space',
    'root ::= "\\"" "\\d"+ "\\""',
    "root ::= undefined-rule",
    'root ::= root "a" | "a"',
    'other ::= "a"',
]


@pytest.fixture(scope="module")
def engine() -> Iterator[LlamaCppEngine]:
    path = assemble(FAST, Settings().models_dir)
    eng = LlamaCppEngine(path, name=FAST.id, options=LlamaCppOptions(context_size=1024))
    yield eng
    asyncio.run(eng.aclose())


def accepts(engine: LlamaCppEngine, grammar: str, text: str) -> bool:
    """Whether llama.cpp's grammar lets the model write exactly `text` and then stop."""
    import llama_cpp

    llm: Any = engine.model
    sampler = llama_cpp.llama_sampler_init_grammar(llm.vocab, grammar.encode(), b"root")
    assert sampler, "the grammar must parse"
    end = llm.token_eos()
    try:
        for token in [*llm.tokenize(text.encode(), add_bos=False, special=False), end]:
            candidates = (llama_cpp.llama_token_data * 1)()
            candidates[0].id, candidates[0].logit, candidates[0].p = token, 0.0, 0.0
            array = llama_cpp.llama_token_data_array(candidates, 1, -1, False)
            llama_cpp.llama_sampler_apply(sampler, ctypes.byref(array))
            if math.isinf(candidates[0].logit):
                return False
            if token != end:
                llama_cpp.llama_sampler_accept(sampler, token)
        return True
    finally:
        llama_cpp.llama_sampler_free(sampler)


def test_unparsable_grammars_are_refused_without_a_crash() -> None:
    child = textwrap.dedent(
        f"""
        import json
        from flashlive.config import Settings
        from flashlive.engine.llamacpp import LlamaCppEngine, LlamaCppOptions
        from flashlive.models import BUILTIN_MODELS, assemble
        spec = next(s for s in BUILTIN_MODELS if s.id == {FAST.id!r})
        engine = LlamaCppEngine(
            assemble(spec, Settings().models_dir), name=spec.id,
            options=LlamaCppOptions(context_size=256),
        )
        grammars = json.loads({json.dumps(json.dumps(UNPARSABLE))})
        print(json.dumps([engine.check_grammar(g) for g in grammars] + [
            engine.check_grammar('root ::= "ok"')
        ]))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", child], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    verdicts = json.loads(done.stdout.strip().splitlines()[-1])
    assert verdicts == [False] * len(UNPARSABLE) + [True]


CASES: list[tuple[Any, list[str], list[str]]] = [
    (
        {
            "type": "object",
            "properties": {'a"b': {"type": "string"}, "c\\d": {"type": "integer"}, "e\nf": {}},
            "required": ['a"b'],
        },
        ['{"a\\"b": "x"}', '{"a\\"b": "x", "c\\\\d": 3}', '{"a\\"b": "", "e\\nf": [true]}'],
        ["{}", '{"c\\\\d": 3}', '{"a"b": "x"}'],
    ),
    (
        {"enum": ["a\nb", "x\\", 'q"', "é", "<start_of_turn>"]},
        ['"a\\nb"', '"x\\\\"', '"q\\""', '"é"', '"<start_of_turn>"'],
        ['"x\\"', '"ab"', '"a\nb"'],
    ),
    (
        {"type": "string", "pattern": "^\\d{3}-[A-Z]+$"},
        ['"123-AB"'],
        ['"12-AB"', '"123-ab"', '"x123-AB"'],
    ),
    ({"type": "string", "pattern": "ab"}, ['"xxabyy"', '"ab"'], ['"a b"']),
    ({"type": "string", "pattern": '^[^a]"\\\\$'}, ['"b\\"\\\\"'], ['"a\\"\\\\"', '"b"\\"']),
    ({"type": "string", "pattern": "^(a|)b{2,}c*?$"}, ['"bb"', '"abbbcc"'], ['"b"']),
    ({"type": "string", "pattern": "^[\\s\\d]+$"}, ['"1 2\\t3\\n"'], ['"1a"']),
    (
        {"type": "array", "items": {"type": "integer"}, "minItems": 2, "maxItems": 3},
        ["[1, 2]", "[1,2,3]"],
        ["[1]", "[1,2,3,4]", "[]", "[01, 2]"],
    ),
    ({"type": "string", "minLength": 2, "maxLength": 3}, ['"ab"', '"abc"'], ['"a"', '"abcd"']),
    (
        {"properties": {"a": {"type": "integer"}, "b": {"type": "string"}, "c": {"type": "null"}}},
        ["{}", '{"a": 1}', '{"b": "x", "c": null}', '{"a": 1, "b": "", "c": null}'],
        ['{"b": "x", "a": 1}', "{,}", '{"d": 1}'],
    ),
    (
        {"properties": {"a": {"type": "integer"}}, "additionalProperties": {"type": "boolean"}},
        ["{}", '{"a": 1, "z": true, "y": false}', '{"z": true, "y": false}'],
        ['{"z": 1}'],
    ),
    (
        {
            "$defs": {
                "Node": {
                    "type": "object",
                    "properties": {
                        "v": {"type": "integer"},
                        "next": {"anyOf": [{"$ref": "#/$defs/Node"}, {"type": "null"}]},
                    },
                    "required": ["v", "next"],
                }
            },
            "$ref": "#/$defs/Node",
        },
        ['{"v": 1, "next": {"v": 2, "next": null}}'],
        ['{"v": 1}'],
    ),
    ({"type": "object", "required": ["x"]}, ['{"x": [1, {"a": null}]}'], ["{}"]),
    ({"type": "number", "enum": [1, 2.5, "x"]}, ["1", "2.5"], ['"x"']),
    ({"type": ["string", "null"]}, ['"a"', "null"], ["1"]),
    ({"type": "string", "format": "date-time"}, ['"2024-01-02T03:04:05Z"'], ['"x"']),
    (
        {"prefixItems": [{"type": "integer"}, {"type": "string"}], "items": False},
        ['[1, "a"]'],
        ["[1]", '[1, "a", 2]'],
    ),
    ({"type": "string", "pattern": "^[é-ÿ]\U0001f600$"}, ['"é\U0001f600"'], ['"a\U0001f600"']),
    ({"type": "string", "pattern": "^a\u2028b$"}, ['"a\u2028b"'], ['"ab"']),
    ({"type": "string"}, ['"ok"', '"\\u00e9"'], ['"tab\there"', '"a"b"']),
]


@pytest.mark.parametrize(("schema", "fit", "misfit"), CASES)
def test_the_grammar_takes_exactly_the_json_that_fits(
    engine: LlamaCppEngine, schema: Any, fit: list[str], misfit: list[str]
) -> None:
    grammar = schema_grammar(schema, "schema")
    assert engine.check_grammar(grammar)
    for text in fit:
        assert accepts(engine, grammar, text), text
    for text in misfit:
        assert not accepts(engine, grammar, text), text


@pytest.mark.parametrize(("seed", "values"), [(1, ['say "hi"', "C:\\dir", "two\nlines"])])
def test_sampling_under_escaped_enum_values_gives_one_of_them(
    engine: LlamaCppEngine, seed: int, values: list[str]
) -> None:
    grammar = schema_grammar({"type": "string", "enum": values}, "schema")
    params = SamplingParams(temperature=1.0, seed=seed, max_tokens=20, grammar=grammar)

    async def sampled() -> str:
        return "".join([p.text async for p in engine.stream(engine.tokenize("Pick: "), params)])

    assert json.loads(asyncio.run(sampled())) in values


names = st.text(st.sampled_from('ab"\\\n\t\u00e9<>[]|:=-_ '), min_size=0, max_size=6)
leaf_schemas = st.one_of(
    st.fixed_dictionaries(
        {"type": st.sampled_from(["string", "integer", "number", "boolean", "null"])},
        optional={
            "minLength": st.integers(0, 4),
            "maxLength": st.integers(4, 9),
            "format": st.sampled_from(["date-time", "date", "time", "uuid", "email"]),
        },
    ),
    st.fixed_dictionaries(
        {"enum": st.lists(names | st.integers() | st.none(), min_size=1, max_size=4)}
    ),
    st.fixed_dictionaries({"const": names}),
    st.fixed_dictionaries(
        {
            "type": st.just("string"),
            "pattern": st.text(st.sampled_from("ab^$|()[]{}*+?.\\d-1,"), max_size=10),
        }
    ),
)
fuzzed_schemas = st.recursive(
    leaf_schemas,
    lambda inner: st.one_of(
        st.fixed_dictionaries(
            {"type": st.just("object"), "properties": st.dictionaries(names, inner, max_size=4)},
            optional={
                "required": st.lists(names, max_size=2),
                "additionalProperties": st.booleans() | inner,
            },
        ),
        st.fixed_dictionaries(
            {"type": st.just("array"), "items": inner},
            optional={"minItems": st.integers(0, 3), "maxItems": st.integers(3, 6)},
        ),
        st.fixed_dictionaries({"anyOf": st.lists(inner, min_size=1, max_size=3)}),
        st.fixed_dictionaries({"nullable": st.just(True), "type": st.just("string")}),
    ),
    max_leaves=8,
)


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(schema=fuzzed_schemas)
def test_every_grammar_built_from_a_schema_parses(
    engine: LlamaCppEngine, schema: dict[str, Any]
) -> None:
    try:
        grammar = schema_grammar(schema, "schema")
    except InvalidArgument:
        return
    assert engine.check_grammar(grammar), grammar
