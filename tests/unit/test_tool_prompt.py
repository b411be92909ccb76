"""Tools in the prompt: native templates get them as they are, others get Enclave's prompt."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from enclave.engine.templates import ChatTemplate, read_named_template
from enclave.output.plan import ChatSpec, ToolChoice, plan_chat
from enclave.output.tool_calls import ToolCallFormat
from enclave.output.tool_prompt import template_supports_tools

TEMPLATES = Path(__file__).resolve().parents[1] / "fixtures" / "templates"
TOOLS = [{
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the weather of a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                       "required": ["city"]},
    },
}]
HISTORY = [
    {"role": "user", "content": "Weather in Paris?"},
    {"role": "assistant", "content": None, "tool_calls": [
        {"id": "call_1", "type": "function",
         "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}]},
    {"role": "tool", "tool_call_id": "call_1", "content": "22 C, sunny"},
]


def fixture(name: str, bos: str = "", eos: str = "") -> ChatTemplate:
    source = (TEMPLATES / f"{name}.jinja").read_text(encoding="utf-8")
    return ChatTemplate(source, name=name, bos_token=bos, eos_token=eos)


def chatml() -> ChatTemplate:
    return ChatTemplate(read_named_template("chatml"), name="chatml")


def test_native_support_detected() -> None:
    assert template_supports_tools(fixture("Qwen-Qwen2.5-7B-Instruct"))
    assert template_supports_tools(fixture("mistralai-Mistral-Nemo-Instruct-2407", "<s>", "</s>"))
    assert not template_supports_tools(chatml())
    assert not template_supports_tools(
        fixture("deepseek-ai-DeepSeek-R1-Distill-Llama-8B", "<｜begin▁of▁sentence｜>"))


def test_native_template_renders_tools_and_history() -> None:
    template = fixture("Qwen-Qwen2.5-7B-Instruct")
    plan = plan_chat(template, ChatSpec(messages=list(HISTORY), tools=TOOLS), "auto")
    assert plan.tool_format is ToolCallFormat.HERMES
    assert '"name": "get_weather"' in plan.prompt
    assert "<tool_response>\n22 C, sunny\n</tool_response>" in plan.prompt
    # The template writes arguments with tojson, so they must arrive as an object.
    assert '{"name": "get_weather", "arguments": {"city": "Paris"}}' in plan.prompt


def test_mistral_template_uses_mistral_format() -> None:
    template = fixture("mistralai-Mistral-Nemo-Instruct-2407", "<s>", "</s>")
    plan = plan_chat(template, ChatSpec(messages=[HISTORY[0]], tools=TOOLS), "auto")
    assert plan.tool_format is ToolCallFormat.MISTRAL
    assert "[AVAILABLE_TOOLS]" in plan.prompt


def test_plain_template_gets_tool_instruction() -> None:
    plan = plan_chat(chatml(), ChatSpec(messages=list(HISTORY), tools=TOOLS), "auto")
    assert plan.tool_format is ToolCallFormat.HERMES
    assert plan.prompt.startswith("<|im_start|>system\nYou can call the functions")
    assert json.dumps(TOOLS[0], ensure_ascii=False) in plan.prompt
    # Earlier calls and results become text that any template can render.
    assert '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}' in plan.prompt
    assert "<|im_start|>user\n<tool_response>\n22 C, sunny\n</tool_response>" in plan.prompt
    assert "<|im_start|>tool" not in plan.prompt


def test_plain_template_keeps_system_message_first() -> None:
    messages = [{"role": "system", "content": "Be brief."}, HISTORY[0]]
    plan = plan_chat(chatml(), ChatSpec(messages=messages, tools=TOOLS), "auto")
    assert plan.prompt.startswith("<|im_start|>system\nBe brief.\n\nYou can call")
    assert plan.prompt.count("<|im_start|>system") == 1


def test_deepseek_distill_history_renders() -> None:
    template = fixture("deepseek-ai-DeepSeek-R1-Distill-Llama-8B", "<｜begin▁of▁sentence｜>")
    plan = plan_chat(template, ChatSpec(messages=list(HISTORY), tools=TOOLS), "auto")
    assert "<tool_response>\n22 C, sunny\n</tool_response>" in plan.prompt
    assert plan.reasoning_opened


@pytest.mark.parametrize(("choice", "wording"), [
    (ToolChoice("required"), "You must call at least one function now."),
    (ToolChoice("function", "get_weather"), "You must call the function get_weather now."),
    (ToolChoice("auto"), "If no function is needed, answer directly."),
])
def test_instruction_follows_tool_choice(choice: ToolChoice, wording: str) -> None:
    plan = plan_chat(chatml(), ChatSpec(messages=[HISTORY[0]], tools=TOOLS, tool_choice=choice),
                     "auto")
    assert wording in plan.prompt


def test_tool_choice_none_offers_no_tools() -> None:
    spec = ChatSpec(messages=[HISTORY[0]], tools=TOOLS, tool_choice=ToolChoice("none"))
    plan = plan_chat(chatml(), spec, "auto")
    assert plan.tool_format is None
    assert plan.grammar is None
    assert "get_weather" not in plan.prompt


def test_grammar_per_tool_choice() -> None:
    forced = plan_chat(chatml(), ChatSpec(messages=[HISTORY[0]], tools=TOOLS,
                                          tool_choice=ToolChoice("required")), "auto")
    assert forced.grammar is not None
    assert forced.grammar_triggers == ()
    lazy = plan_chat(chatml(), ChatSpec(messages=[HISTORY[0]], tools=TOOLS), "auto")
    assert lazy.grammar is not None
    assert lazy.grammar_triggers == ("<tool_call>",)
