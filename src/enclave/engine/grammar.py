"""GBNF grammars that make llama.cpp sample only output of a required shape.

JSON Schema is converted with llama-cpp-python's converter (``llama_cpp.llama_grammar``),
which follows llama.cpp's ``json-schema-to-grammar``. That converter ignores integer bounds,
so Enclave adds them. Some keywords no grammar here can express (number bounds,
``multipleOf``, ``uniqueItems``, ``not`` and others), so response schemas that use them are
rejected: output that follows the grammar then always validates against the schema. Every
grammar here names its start rule ``root``, which is what ``SamplingParams.grammar`` expects.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from llama_cpp import llama_grammar

from enclave.errors import InvalidRequestError, reason

_ROOT_RULE = re.compile(r"^root(\s*)::=", re.MULTILINE)
# The converter's string characters include control characters, which JSON forbids unescaped
# in strings (RFC 8259, section 7); llama.cpp's own JSON grammar excludes them as here.
_LOOSE_CHAR_RULE = r'char ::= [^"\\] |'
_STRICT_CHAR_RULE = r'char ::= [^"\\\x7F\x00-\x1F] |'
# The converter's integers have at most 16 digits; an open bound stops there too.
_MAX_DIGITS = 16
_BOUND_KEYWORDS = ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum")
# Keywords a grammar cannot enforce. Annotations (title, description, examples, default) and
# formats the converter does not know are fine: they do not restrict valid values here.
_UNENFORCEABLE_KEYWORDS = frozenset({
    "multipleOf", "uniqueItems", "not", "if", "then", "else", "contains", "minContains",
    "maxContains", "minProperties", "maxProperties", "patternProperties", "propertyNames",
    "dependentRequired", "dependentSchemas", "dependencies", "unevaluatedProperties",
    "unevaluatedItems",
})
# The converter writes a bound of N as N copies of the item, and a maximum as N nested
# optional groups. A large bound therefore makes a grammar of gigabytes, or one whose nesting
# overflows the stack of llama.cpp's recursive grammar parser. With llama-cpp-python 0.3.36,
# llama.cpp rejects a maxLength of 1500 anyway ("exceeds sane defaults") and crashes on 100000.
MAX_REPETITIONS = 1000
_COUNT_KEYWORDS = ("minLength", "maxLength", "minItems", "maxItems")
# Quantifier bounds in a regular expression: the numbers in {n}, {n,} and {n,m}.
_PATTERN_BOUNDS = re.compile(r"\{(\d+)(?:,(\d*))?\}")
# Maximum depth of nested groups in a grammar given to llama.cpp, whose parser recurses once
# per group and crashes the process (SIGSEGV) on a deep enough one.
MAX_GRAMMAR_NESTING = 1000
# String literals, character classes and comments, whose brackets are no groups.
_GBNF_NON_GROUP = re.compile(r'"(?:\\.|[^"\\])*"|\[(?:\\.|[^\]\\])*\]|#[^\n]*')
_GROUP_BRACKETS = re.compile(r"[()]")


def json_object_grammar() -> str:
    """Return a grammar for any JSON object (OpenAI's json_object, Ollama's "json")."""
    return llama_grammar.JSON_GBNF


def json_schema_grammar(schema: dict[str, Any], *, param: str) -> str:
    """Return a grammar for JSON that validates against a JSON Schema.

    Raises InvalidRequestError naming ``param`` when the schema uses a feature the converter
    does not support.
    """
    check_enforceable(schema, param)
    converter = _converter()
    try:
        resolved = converter.resolve_refs(schema, "request")
        converter.visit(resolved, "")
    # The converter signals unsupported schemas with assorted built-in exceptions
    # (AssertionError, KeyError, ValueError, NotImplementedError), so catch them all here
    # and report the schema as the cause.
    except Exception as exc:
        raise InvalidRequestError(
            f"The JSON schema in {param} cannot be enforced: {reason(exc)}. Simplify the schema "
            "(local $ref under #/$defs, no remote references).",
            param=param,
        ) from None
    return _formatted(converter)


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
                # Tools are offered as they are: keywords the grammar cannot enforce are
                # dropped from the grammar (the tool still receives and checks its arguments).
                arguments_key: relax(tool.parameters) or {"type": "object"},
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
            f"A tool's parameters schema cannot be enforced: {reason(exc)}. Simplify the schema.",
            param="tools",
        ) from None
    block = " ".join(part for part in (_literal(opening) if opening else "", "tool-call",
                                       _literal(closing) if closing else "") if part)
    repeat = f" ({_literal(separator)} tool-block)*" if parallel else ""
    return _formatted(converter) + f"\ntool-block ::= {block}\nroot ::= tool-block{repeat}\n"


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


def check_enforceable(schema: Any, param: str) -> None:
    """Raise InvalidRequestError if a schema uses a keyword no grammar here can enforce."""
    for path, node in _subschemas(schema, "schema"):
        keywords = sorted(_UNENFORCEABLE_KEYWORDS & node.keys())
        if node.get("type") == "number" or isinstance(node.get("type"), list):
            keywords += [key for key in _BOUND_KEYWORDS if key in node]
        if keywords:
            raise InvalidRequestError(
                f"The JSON schema in {param} uses {', '.join(keywords)} at {path}, which "
                "constrained decoding cannot enforce. Remove it, or use an integer for "
                "bounded numbers.",
                param=param,
            )
        too_large = _too_large_counts(node)
        if too_large:
            raise InvalidRequestError(
                f"The JSON schema in {param} sets {', '.join(too_large)} at {path}, but "
                f"constrained decoding supports counts up to {MAX_REPETITIONS}. Lower it or "
                "remove it.",
                param=param,
            )


def check_grammar_nesting(grammar: str, *, param: str) -> None:
    """Raise InvalidRequestError if a GBNF grammar nests groups deeper than llama.cpp can parse.

    Run it on every grammar before llama.cpp parses it, because a request's own grammar is
    not limited by the schema checks above.
    """
    depth = deepest = 0
    for bracket in _GROUP_BRACKETS.findall(_GBNF_NON_GROUP.sub("", grammar)):
        if bracket == "(":
            depth += 1
            deepest = max(deepest, depth)
        else:
            depth -= 1
    if deepest > MAX_GRAMMAR_NESTING:
        raise InvalidRequestError(
            f"The grammar for the requested output nests groups {deepest} levels deep, but "
            f"at most {MAX_GRAMMAR_NESTING} are supported. Lower the lengths and counts in "
            "the schema or grammar.",
            param=param,
        )


def _too_large_counts(node: dict[str, Any]) -> list[str]:
    """Return "keyword = value" for each length or count in a schema above MAX_REPETITIONS."""
    return [f"{key} = {node[key]}" for key in (*_COUNT_KEYWORDS, "pattern")
            if _is_too_large(key, node.get(key))]


def _is_too_large(keyword: str, value: Any) -> bool:
    if keyword == "pattern":
        if not isinstance(value, str):
            return False
        numbers = [number for pair in _PATTERN_BOUNDS.findall(value)
                   for number in pair if number]
        # The length test comes first: int() rejects strings of more than 4300 digits.
        return any(len(number) > 6 or int(number) > MAX_REPETITIONS for number in numbers)
    return keyword in _COUNT_KEYWORDS and isinstance(value, int | float) and (
        value > MAX_REPETITIONS)


def relax(schema: Any) -> Any:
    """Return a copy of a schema without the keywords and values check_enforceable() rejects."""
    if not isinstance(schema, dict):
        return schema
    numeric = schema.get("type") == "number" or isinstance(schema.get("type"), list)
    relaxed: dict[str, Any] = {}
    for key, value in schema.items():
        if key in _UNENFORCEABLE_KEYWORDS or (numeric and key in _BOUND_KEYWORDS):
            continue
        if _is_too_large(key, value):
            continue
        if key in ("properties", "$defs", "definitions") and isinstance(value, dict):
            relaxed[key] = {name: relax(child) for name, child in value.items()}
        elif key in ("items", "additionalProperties"):
            relaxed[key] = [relax(child) for child in value] if isinstance(value, list) else (
                relax(value))
        elif key in ("anyOf", "oneOf", "allOf", "prefixItems") and isinstance(value, list):
            relaxed[key] = [relax(child) for child in value]
        else:
            relaxed[key] = value
    return relaxed


def _subschemas(schema: Any, path: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """Yield every schema object nested in a schema, with a readable path."""
    if not isinstance(schema, dict):
        return
    yield path, schema
    for key in ("properties", "$defs", "definitions"):
        for name, child in (schema.get(key) or {}).items():
            yield from _subschemas(child, f"{path}.{key}.{name}")
    for key in ("items", "additionalProperties"):
        yield from _subschemas(schema.get(key), f"{path}.{key}")
    for key in ("anyOf", "oneOf", "allOf", "prefixItems", "items"):
        children = schema.get(key)
        if isinstance(children, list):
            for index, child in enumerate(children):
                yield from _subschemas(child, f"{path}.{key}[{index}]")


def integer_range(low: int, high: int) -> str:
    """Return a GBNF expression for the decimal integers from ``low`` to ``high``."""
    if low > high:
        raise ValueError(f"empty integer range {low}..{high}")
    parts = []
    if low < 0:
        negative_high = -min(high, -1)
        parts.append(f'"-" {_non_negative_range(negative_high, -low)}')
    if high >= 0:
        parts.append(_non_negative_range(max(low, 0), high))
    return parts[0] if len(parts) == 1 else "(" + " | ".join(parts) + ")"


def _non_negative_range(low: int, high: int) -> str:
    """Split the range by digit count, so no alternative has a leading zero."""
    parts = []
    for digits in range(len(str(low)), len(str(high)) + 1):
        start = max(low, 10 ** (digits - 1) if digits > 1 else 0)
        end = min(high, 10**digits - 1)
        if start <= end:
            parts.append(_same_length_range(str(start), str(end)))
    return parts[0] if len(parts) == 1 else "(" + " | ".join(parts) + ")"


def _same_length_range(low: str, high: str) -> str:
    """Return GBNF for the digit strings of one length from ``low`` to ``high``."""
    if low == high:
        return _literal(low)
    if set(low) == {"0"} and set(high) == {"9"}:
        return f"[0-9]{{{len(low)}}}"
    first_low, first_high = low[0], high[0]
    if first_low == first_high:
        return f"{_literal(first_low)} {_same_length_range(low[1:], high[1:])}"
    if len(low) == 1:
        return f"[{first_low}-{first_high}]"
    rest = len(low) - 1
    parts = [f"{_literal(first_low)} {_same_length_range(low[1:], '9' * rest)}"]
    if int(first_high) - int(first_low) > 1:
        parts.append(f"[{int(first_low) + 1}-{int(first_high) - 1}] [0-9]{{{rest}}}")
    parts.append(f"{_literal(first_high)} {_same_length_range('0' * rest, high[1:])}")
    return "(" + " | ".join(parts) + ")"


def _integer_bounds(schema: dict[str, Any]) -> tuple[int, int]:
    limit = 10**_MAX_DIGITS - 1
    low, high = -limit, limit
    if isinstance(schema.get("minimum"), int | float):
        low = max(low, math.ceil(schema["minimum"]))
    if isinstance(schema.get("exclusiveMinimum"), int | float):
        low = max(low, math.floor(schema["exclusiveMinimum"]) + 1)
    if isinstance(schema.get("maximum"), int | float):
        high = min(high, math.floor(schema["maximum"]))
    if isinstance(schema.get("exclusiveMaximum"), int | float):
        high = min(high, math.ceil(schema["exclusiveMaximum"]) - 1)
    return low, high


class _BoundedIntegerConverter(llama_grammar.SchemaConverter):
    """The llama-cpp-python converter, extended with minimum and maximum for integers."""

    def visit(self, schema: dict[str, Any], name: str) -> Any:
        bounded = any(key in schema for key in _BOUND_KEYWORDS)
        if schema.get("type") == "integer" and bounded:
            low, high = _integer_bounds(schema)
            if low > high:
                raise ValueError(f"no integer lies between the bounds of {name or 'root'}")
            # The same rule naming as SchemaConverter.visit.
            rule_name = name + "-" if name in llama_grammar.RESERVED_NAMES else name or "root"
            rule = f"{integer_range(low, high)} space"
            return self._add_rule(rule_name, rule)  # type: ignore[no-untyped-call]
        return super().visit(schema, name)  # type: ignore[no-untyped-call]


def _formatted(converter: Any) -> str:
    grammar = str(converter.format_grammar())
    return grammar.replace(_LOOSE_CHAR_RULE, _STRICT_CHAR_RULE)


def _converter() -> Any:
    # Typed as Any because llama-cpp-python's converter has no annotations.
    return _BoundedIntegerConverter(  # type: ignore[no-untyped-call]
        prop_order={}, allow_fetch=False, dotall=False, raw_pattern=False
    )


def _literal(text: str) -> str:
    """Return text as a GBNF string literal."""
    return json.dumps(text, ensure_ascii=False)


def _excluding(char: str) -> str:
    """Return a GBNF character class matching any character but ``char``."""
    escaped = char.replace("\\", "\\\\").replace("]", "\\]").replace("^", "\\^")
    return f"[^{escaped}]"
