"""Turn a protocol-neutral chat request into prompt text, a grammar and a parsing plan."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Literal

from enclave.engine.grammar import (
    ToolSignature,
    after_free_text,
    json_object_grammar,
    json_schema_grammar,
    tool_call_grammar,
)
from enclave.engine.templates import ChatTemplate
from enclave.errors import InvalidRequestError
from enclave.output.reasoning import THINK_CLOSE, prompt_opens_reasoning, template_thinks
from enclave.output.tool_calls import HERMES_CLOSE, HERMES_OPEN, ToolCallFormat, detect_format
from enclave.output.tool_prompt import (
    has_tool_history,
    inline_tool_messages,
    structured_arguments,
    template_supports_tools,
    tools_instruction,
)

logger = logging.getLogger(__name__)

ReasoningSetting = Literal["auto", "off"]

# Template variables Enclave sets itself; a request's template kwargs may not replace them.
_RESERVED_TEMPLATE_VARIABLES = frozenset(
    {"messages", "tools", "add_generation_prompt", "bos_token", "eos_token"}
)


@dataclass(frozen=True, slots=True)
class ToolChoice:
    """The tool-use mode: none, auto, required, or one named function."""

    mode: Literal["none", "auto", "required", "function"] = "auto"
    name: str | None = None


@dataclass(frozen=True, slots=True)
class OutputFormat:
    """Structured output: any JSON object when ``schema`` is None, else JSON for the schema."""

    schema: dict[str, Any] | None
    param: str


@dataclass(slots=True)
class ChatSpec:
    """A chat request in neutral terms; messages use OpenAI's field names."""

    messages: list[dict[str, Any]]
    tools: list[dict[str, Any]] = field(default_factory=list)
    tool_choice: ToolChoice = field(default_factory=ToolChoice)
    # Off unless asked for, as in llama.cpp's server: small models offered several calls
    # tend to repeat the same call until the token limit.
    parallel_tool_calls: bool = False
    output_format: OutputFormat | None = None
    # False when the request wants the raw text (reasoning_format "none", think false).
    split_reasoning: bool = True
    # The template's thinking switch (Qwen 3 and some R1 templates read enable_thinking).
    enable_thinking: bool | None = None
    template_kwargs: dict[str, Any] = field(default_factory=dict)
    # A client's own GBNF grammar, used as given.
    grammar: str | None = None


@dataclass(frozen=True, slots=True)
class ChatPlan:
    """The prompt, grammar and output parsing of one chat request."""

    prompt: str
    grammar: str | None = None
    grammar_triggers: tuple[str, ...] = ()
    split_reasoning: bool = False
    # The prompt ends inside <think>, so the output starts in the reasoning.
    reasoning_opened: bool = False
    # How to find tool calls in the output; None when the request offered no tools.
    tool_format: ToolCallFormat | None = None


def model_thinks(template: ChatTemplate, setting: ReasoningSetting) -> bool:
    """Return whether output of this model is split into reasoning and answer."""
    return setting == "auto" and template_thinks(template.source)


def plan_chat(template: ChatTemplate, spec: ChatSpec, reasoning: ReasoningSetting) -> ChatPlan:
    """Render the prompt and choose the grammar and output parsing for one chat request."""
    kwargs = _template_kwargs(spec)
    tools_on = bool(spec.tools) and spec.tool_choice.mode != "none"
    uses_tools = bool(spec.tools) or has_tool_history(spec.messages)
    native = uses_tools and template_supports_tools(template)

    if native:
        offered = spec.tools if tools_on else None
        prompt = _render_native(template, spec.messages, offered, kwargs)
        call_format = detect_format(template.source)
    else:
        messages = spec.messages
        if uses_tools:
            instruction = _instruction(spec) if tools_on else None
            messages = inline_tool_messages(messages, instruction)
        prompt = template.render(messages, **kwargs)
        call_format = ToolCallFormat.HERMES

    opened = prompt_opens_reasoning(prompt)
    split = reasoning == "auto" and spec.split_reasoning and (
        template_thinks(template.source) or opened
    )
    grammar, triggers, call_format = _grammar(spec, tools_on, call_format, opened)
    return ChatPlan(
        prompt=prompt,
        grammar=grammar,
        grammar_triggers=triggers,
        split_reasoning=split,
        reasoning_opened=opened,
        tool_format=call_format if tools_on else None,
    )


def plan_raw(prompt: str, output_format: OutputFormat | None) -> ChatPlan:
    """Plan a prompt that the client formatted itself: no template, tools or reasoning split."""
    if output_format is None:
        return ChatPlan(prompt=prompt)
    return ChatPlan(prompt=prompt, grammar=_format_grammar(output_format))


def _template_kwargs(spec: ChatSpec) -> dict[str, Any]:
    reserved = _RESERVED_TEMPLATE_VARIABLES & spec.template_kwargs.keys()
    if reserved:
        raise InvalidRequestError(
            f"chat_template_kwargs may not set {', '.join(sorted(reserved))}; Enclave sets "
            "these itself. Remove them.",
            param="chat_template_kwargs",
        )
    kwargs = dict(spec.template_kwargs)
    if spec.enable_thinking is not None:
        kwargs["enable_thinking"] = spec.enable_thinking
    return kwargs


def _render_native(template: ChatTemplate, messages: list[dict[str, Any]],
                   tools: list[dict[str, Any]] | None, kwargs: dict[str, Any]) -> str:
    """Render with call arguments as objects, falling back to JSON text for templates that
    concatenate them as strings (the DeepSeek-R1 distill templates do)."""
    try:
        return template.render(structured_arguments(messages), tools=tools, **kwargs)
    except InvalidRequestError:
        if not has_tool_history(messages):
            raise
        return template.render(messages, tools=tools, **kwargs)


def _instruction(spec: ChatSpec) -> str:
    choice = spec.tool_choice
    return tools_instruction(
        spec.tools,
        required_name=choice.name if choice.mode == "function" else None,
        required=choice.mode == "required",
    )


def _grammar(spec: ChatSpec, tools_on: bool, call_format: ToolCallFormat,
             opened: bool) -> tuple[str | None, tuple[str, ...], ToolCallFormat]:
    """Return the grammar, its lazy triggers, and the tool-call format the output will use."""
    if spec.grammar is not None:
        return spec.grammar, (), call_format
    choice = spec.tool_choice
    if tools_on and choice.mode in ("required", "function"):
        grammar, call_format = _forced_call_grammar(spec, call_format)
        return (after_free_text(grammar, THINK_CLOSE) if opened else grammar), (), call_format

    if spec.output_format is not None:
        grammar = _format_grammar(spec.output_format)
        return (after_free_text(grammar, THINK_CLOSE) if opened else grammar), (), call_format

    if tools_on and call_format is ToolCallFormat.HERMES:
        # Free text until the model opens a call; from there the call must be well formed.
        grammar = _hermes_grammar(_signatures(spec.tools), spec.parallel_tool_calls)
        if opened:
            trigger = rf"^[\s\S]*?{THINK_CLOSE}[\s\S]*?({HERMES_OPEN})[\s\S]*$"
        else:
            trigger = HERMES_OPEN
        return grammar, (trigger,), call_format
    return None, (), call_format


def _format_grammar(output: OutputFormat) -> str:
    if output.schema is None:
        return json_object_grammar()
    return json_schema_grammar(output.schema, param=output.param)


def _forced_call_grammar(spec: ChatSpec,
                         call_format: ToolCallFormat) -> tuple[str, ToolCallFormat]:
    choice = spec.tool_choice
    signatures = _signatures(spec.tools)
    parallel = spec.parallel_tool_calls
    if choice.mode == "function":
        signatures = [tool for tool in signatures if tool.name == choice.name]
        parallel = False
    if call_format is ToolCallFormat.LLAMA3_JSON:
        grammar = tool_call_grammar(signatures, arguments_key="parameters", opening="",
                                    closing="", separator="", parallel=False)
        return grammar, call_format
    if call_format is ToolCallFormat.MISTRAL:
        grammar = tool_call_grammar(signatures, arguments_key="arguments", opening="[",
                                    closing="]", separator=", ", parallel=parallel)
        return grammar, call_format
    # NOTE: DeepSeek-R1 templates are forced into Hermes blocks here, because their native
    # syntax puts the function name outside the JSON object, which this grammar builder
    # does not produce.
    return _hermes_grammar(signatures, parallel), ToolCallFormat.HERMES


def _hermes_grammar(signatures: list[ToolSignature], parallel: bool) -> str:
    return tool_call_grammar(signatures, arguments_key="arguments",
                             opening=HERMES_OPEN + "\n", closing="\n" + HERMES_CLOSE,
                             separator="\n", parallel=parallel)


def _signatures(tools: list[dict[str, Any]]) -> list[ToolSignature]:
    return [
        ToolSignature(tool["function"]["name"], tool["function"].get("parameters") or {})
        for tool in tools
    ]
