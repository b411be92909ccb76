"""Grammars for tool calls and JSON output compile in llama.cpp and reject bad schemas."""

from __future__ import annotations

import ctypes
import math
from collections.abc import Iterator

import llama_cpp
import pytest

from enclave.engine.grammar import (
    ToolSignature,
    after_free_text,
    integer_range,
    json_object_grammar,
    json_schema_grammar,
    relax,
    tool_call_grammar,
)
from enclave.engine.llama_model import LlamaModel
from enclave.errors import InvalidRequestError
from enclave.models.embedded import default_chat_model

WEATHER = ToolSignature("get_weather", {"type": "object", "properties": {
    "city": {"type": "string"}, "days": {"type": "integer", "minimum": 1}},
    "required": ["city"]})
NO_ARGUMENTS = ToolSignature("get_time", {})


@pytest.fixture(scope="module")
def vocab_model() -> Iterator[LlamaModel]:
    model = LlamaModel(default_chat_model(), vocab_only=True)
    yield model
    model.close()


def compiles(model: LlamaModel, grammar: str) -> bool:
    sampler = llama_cpp.llama_sampler_init_grammar(model.vocab, grammar.encode(), b"root")
    if not sampler:
        return False
    llama_cpp.llama_sampler_free(sampler)
    return True


def test_grammars_compile(vocab_model: LlamaModel) -> None:
    grammars = {
        "json object": json_object_grammar(),
        "json schema": json_schema_grammar(
            {"type": "object", "properties": {"tags": {"type": "array",
                                                       "items": {"enum": ["a", "b"]}}}},
            param="response_format"),
        "hermes calls": tool_call_grammar([WEATHER, NO_ARGUMENTS], arguments_key="arguments",
                                          opening="<tool_call>\n", closing="\n</tool_call>",
                                          separator="\n", parallel=True),
        "llama3 call": tool_call_grammar([WEATHER], arguments_key="parameters", opening="",
                                         closing="", separator="", parallel=False),
    }
    for name, grammar in grammars.items():
        assert compiles(vocab_model, grammar), name
        assert compiles(vocab_model, after_free_text(grammar, "</think>")), name


def test_tool_grammar_names_only_given_tools() -> None:
    grammar = tool_call_grammar([WEATHER], arguments_key="arguments", opening="<tool_call>",
                                closing="</tool_call>", separator="", parallel=False)
    assert '"\\"get_weather\\""' in grammar
    assert "get_time" not in grammar
    assert "root ::= tool-block\n" in grammar


def test_invalid_schema_names_param() -> None:
    with pytest.raises(InvalidRequestError) as caught:
        json_schema_grammar({"$ref": "https://example.invalid/schema.json"},
                            param="response_format.json_schema.schema")
    assert caught.value.param == "response_format.json_schema.schema"
    assert "cannot be enforced" in caught.value.message


def test_free_text_prefix_needs_root() -> None:
    with pytest.raises(ValueError, match="root"):
        after_free_text('answer ::= "x"', "</think>")


def accepts(model: LlamaModel, grammar: str, text: str) -> bool:
    """Feed text to a llama.cpp grammar one character token at a time; True if it completes."""
    sampler = llama_cpp.llama_sampler_init_grammar(model.vocab, grammar.encode(), b"root")
    assert sampler

    def allowed(token: int) -> bool:
        single = llama_cpp.llama_token_data(token, 0.0, 0.0)
        array = llama_cpp.llama_token_data_array(ctypes.pointer(single), 1, -1, False)
        llama_cpp.llama_sampler_apply(sampler, ctypes.byref(array))
        return math.isfinite(single.logit)

    try:
        for char in text:
            tokens = model.tokenize(char, add_special=False, parse_special=False)
            assert len(tokens) == 1, char
            if not allowed(tokens[0]):
                return False
            llama_cpp.llama_sampler_accept(sampler, tokens[0])
        return allowed(model.eos_token)  # the end is allowed only once the grammar is done
    finally:
        llama_cpp.llama_sampler_free(sampler)


@pytest.mark.parametrize(("low", "high"), [
    (0, 130), (-25, 7), (5, 5), (10, 99), (-1000, -10), (-3, 0), (95, 1005),
])
def test_integer_range_is_exact(vocab_model: LlamaModel, low: int, high: int) -> None:
    grammar = f"root ::= {integer_range(low, high)}"
    for value in range(low - 3, high + 4):
        assert accepts(vocab_model, grammar, str(value)) == (low <= value <= high), value
    for padded in ("00", "007", "-0"):
        assert not accepts(vocab_model, grammar, padded), padded


def test_schema_integer_bounds_enforced(vocab_model: LlamaModel) -> None:
    schema = {"type": "object", "properties": {
        "age": {"type": "integer", "minimum": 0, "exclusiveMaximum": 131}}, "required": ["age"]}
    grammar = json_schema_grammar(schema, param="format")
    assert accepts(vocab_model, grammar, '{"age": 130}')
    assert not accepts(vocab_model, grammar, '{"age": 131}')
    assert not accepts(vocab_model, grammar, '{"age": 2664}')
    assert not accepts(vocab_model, grammar, '{"age": -1}')


@pytest.mark.parametrize(("schema", "keyword"), [
    ({"type": "number", "minimum": 0}, "minimum"),
    ({"type": "array", "items": {"type": "string"}, "uniqueItems": True}, "uniqueItems"),
    ({"type": "object", "properties": {"n": {"type": "integer", "multipleOf": 5}}},
     "multipleOf"),
    ({"anyOf": [{"not": {"type": "string"}}]}, "not"),
])
def test_unenforceable_schema_rejected(schema: dict[str, object], keyword: str) -> None:
    with pytest.raises(InvalidRequestError) as caught:
        json_schema_grammar(schema, param="format")
    assert keyword in caught.value.message
    assert caught.value.param == "format"


def test_property_named_like_keyword_allowed() -> None:
    schema = {"type": "object", "properties": {"not": {"type": "string"},
                                               "minimum": {"type": "integer"}}}
    assert "not" in json_schema_grammar(schema, param="format")


def test_tool_schema_relaxed_not_rejected(vocab_model: LlamaModel) -> None:
    tool = ToolSignature("search", {"type": "object", "properties": {
        "query": {"type": "string"}, "limit": {"type": "number", "minimum": 1},
        "tags": {"type": "array", "items": {"type": "string"}, "uniqueItems": True}}})
    grammar = tool_call_grammar([tool], arguments_key="arguments", opening="", closing="",
                                separator="", parallel=False)
    assert compiles(vocab_model, grammar)
    assert relax(tool.parameters)["properties"]["limit"] == {"type": "number"}


def test_strings_exclude_control_characters(vocab_model: LlamaModel) -> None:
    grammars = [
        json_schema_grammar({"type": "string"}, param="format"),
        tool_call_grammar([ToolSignature("note", {"type": "object", "properties": {
            "text": {"type": "string"}}, "required": ["text"]})],
            arguments_key="arguments", opening="", closing="", separator="", parallel=False),
    ]
    assert accepts(vocab_model, grammars[0], '"a\\nb"')  # an escaped newline is valid JSON
    assert not accepts(vocab_model, grammars[0], '"a\nb"')
    assert accepts(vocab_model, grammars[1], '{"name": "note", "arguments": {"text": "a\\tb"}}')
    assert not accepts(vocab_model, grammars[1], '{"name": "note", "arguments": {"text": "a\tb"}}')
