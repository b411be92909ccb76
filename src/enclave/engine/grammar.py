"""GBNF grammars that make llama.cpp sample only output of a required shape.

JSON Schema is converted with llama-cpp-python's converter (``llama_cpp.llama_grammar``),
which follows llama.cpp's ``json-schema-to-grammar``. Every grammar here names its start
rule ``root``, which is what ``SamplingParams.grammar`` expects.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from llama_cpp import llama_grammar

from enclave.errors import InvalidRequestError

_ROOT_RULE = re.compile(r"^root(\s*)::=", re.MULTILINE)


def json_object_grammar() -> str:
    """Return a grammar for any JSON object (OpenAI's json_object, Ollama's "json")."""
    return llama_grammar.JSON_GBNF


def json_schema_grammar(schema: dict[str, Any], *, param: str) -> str:
    """Return a grammar for JSON that validates against a JSON Schema.

    Raises InvalidRequestError naming ``param`` when the schema uses a feature the converter
    does not support.
    """
    converter = _converter()
    try:
        resolved = converter.resolve_refs(schema, "request")
        converter.visit(resolved, "")
    # The converter signals unsupported schemas with assorted built-in exceptions
    # (AssertionError, KeyError, ValueError, NotImplementedError), so catch them all here
    # and report the schema as the cause.
    except Exception as exc:
        raise InvalidRequestError(
            f"The JSON schema in {param} cannot be enforced: {exc}. Simplify the schema "
            "(local $ref under #/$defs, no remote references).",
            param=param,
        ) from None
    return str(converter.format_grammar())


@dataclass(frozen=True, slots=True)
class ToolSignature:
    """The name and JSON Schema of a function's arguments."""

    name: str
    parameters: dict[str, Any]


def tool_call_grammar(
    tools: Sequence[ToolSignature],
    *,
    arguments_key: str,
    opening: str,
    closing: str,
    separator: str,
    parallel: bool,
) -> str:
    """Return a grammar for one or more calls ``opening {"name": ..., KEY: {...}} closing``.

    Each call object must name one of the tools and carry arguments that validate against
    that tool's parameter schema. With ``parallel`` several calls may follow each other,
    joined by ``separator``.
    """
    variants = [
        {
            "type": "object",
            "properties": {
                "name": {"const": tool.name},
                arguments_key: tool.parameters or {"type": "object"},
            },
            "required": ["name", arguments_key],
        }
        for tool in tools
    ]
    converter = _converter()
    try:
        resolved = converter.resolve_refs({"oneOf": variants}, "request")
        converter.visit(resolved, "tool-call")
    except Exception as exc:  # see json_schema_grammar for why every exception
        raise InvalidRequestError(
            f"A tool's parameters schema cannot be enforced: {exc}. Simplify the schema.",
            param="tools",
        ) from None
    block = f"{_literal(opening)} tool-call {_literal(closing)}"
    repeat = f" ({_literal(separator)} tool-block)*" if parallel else ""
    return (
        str(converter.format_grammar())
        + f"\ntool-block ::= {block}\nroot ::= tool-block{repeat}\n"
    )


def after_free_text(grammar: str, terminator: str) -> str:
    """Return a grammar for free text up to ``terminator``, then whitespace, then ``grammar``.

    Used when a reasoning model's prompt ends inside ``<think>``: the model may think in
    free text, and the constraint starts after ``</think>``. The free text cannot contain
    the terminator itself, nor end in a character that starts it (such as ``<``), because
    GBNF has no negative lookahead.
    """
    renamed = _ROOT_RULE.sub(r"enclave-answer\1::=", grammar, count=1)
    if renamed == grammar:
        raise ValueError("grammar has no root rule")
    alternatives = [_excluding(terminator[0])]
    for length in range(1, len(terminator)):
        alternatives.append(f"{_literal(terminator[:length])} {_excluding(terminator[length])}")
    return (
        renamed
        + f"\nenclave-free-text ::= ({' | '.join(alternatives)})*"
        + f'\nroot ::= enclave-free-text {_literal(terminator)} [ \\t\\n]* enclave-answer\n'
    )


def _converter() -> Any:
    # Typed as Any because llama-cpp-python's converter has no annotations.
    return llama_grammar.SchemaConverter(  # type: ignore[no-untyped-call]
        prop_order={}, allow_fetch=False, dotall=False, raw_pattern=False
    )


def _literal(text: str) -> str:
    """Return text as a GBNF string literal."""
    return json.dumps(text, ensure_ascii=False)


def _excluding(char: str) -> str:
    """Return a GBNF character class matching any character but ``char``."""
    escaped = char.replace("\\", "\\\\").replace("]", "\\]").replace("^", "\\^")
    return f"[^{escaped}]"
