"""The DeepSeek-R1 distill chat templates: the prompt opens <think> and the plan splits output."""

from __future__ import annotations

from pathlib import Path

import pytest

from enclave.engine.templates import ChatTemplate
from enclave.errors import InvalidRequestError
from enclave.output.parser import ChatOutput, ChatOutputParser, collect
from enclave.output.plan import ChatSpec, OutputFormat, plan_chat
from enclave.output.reasoning import prompt_opens_reasoning, template_thinks

TEMPLATES = Path(__file__).resolve().parents[1] / "fixtures" / "templates"
LLAMA_DISTILL = TEMPLATES / "deepseek-ai-DeepSeek-R1-Distill-Llama-8B.jinja"
QWEN_DISTILL = TEMPLATES / "deepseek-ai-DeepSeek-R1-Distill-Qwen-32B.jinja"
BOS = "<｜begin▁of▁sentence｜>"
EOS = "<｜end▁of▁sentence｜>"
QUESTION = [{"role": "user", "content": "What is 2+2?"}]


def load(path: Path) -> ChatTemplate:
    return ChatTemplate(path.read_text(encoding="utf-8"), name=path.stem, bos_token=BOS,
                        eos_token=EOS)


def test_llama_distill_prompt_opens_think() -> None:
    template = load(LLAMA_DISTILL)
    prompt = template.render(list(QUESTION))
    assert prompt == f"{BOS}<｜User｜>What is 2+2?<｜Assistant｜><think>\n"
    assert prompt_opens_reasoning(prompt)
    assert template_thinks(template.source)


def test_qwen_distill_follows_enable_thinking() -> None:
    template = load(QWEN_DISTILL)
    assert not prompt_opens_reasoning(template.render(list(QUESTION)))
    assert prompt_opens_reasoning(template.render(list(QUESTION), enable_thinking=True))
    assert template_thinks(template.source)


def test_plan_splits_opened_prompt() -> None:
    template = load(LLAMA_DISTILL)
    plan = plan_chat(template, ChatSpec(messages=list(QUESTION)), "auto")
    assert plan.split_reasoning
    assert plan.reasoning_opened
    assert plan.grammar is None

    parser = ChatOutputParser(plan)
    result = ChatOutput()
    for char in "Two plus two is four.\n</think>\n\nThe answer is 4.":
        collect(parser.push(char), result)
    collect(parser.finish(), result)
    assert result.reasoning == "Two plus two is four.\n"
    assert result.content == "The answer is 4."


def test_plan_raw_when_reasoning_off() -> None:
    template = load(LLAMA_DISTILL)
    for setting, split_requested in (("off", True), ("auto", False)):
        spec = ChatSpec(messages=list(QUESTION), split_reasoning=split_requested)
        plan = plan_chat(template, spec, setting)  # type: ignore[arg-type]
        assert not plan.split_reasoning
        parser = ChatOutputParser(plan)
        result = ChatOutput()
        collect(parser.push("think</think>answer"), result)
        collect(parser.finish(), result)
        assert result.content == "think</think>answer"
        assert result.reasoning == ""


def test_plan_sets_enable_thinking_variable() -> None:
    template = load(QWEN_DISTILL)
    thinking = plan_chat(template, ChatSpec(messages=list(QUESTION), enable_thinking=True),
                         "auto")
    assert thinking.reasoning_opened
    plain = plan_chat(template, ChatSpec(messages=list(QUESTION), enable_thinking=False),
                      "auto")
    assert not plain.reasoning_opened
    assert plain.prompt.endswith("<think>\n</think>")


def test_history_reasoning_is_dropped_by_template() -> None:
    template = load(LLAMA_DISTILL)
    messages = [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello!", "reasoning_content": "Greet back."},
        {"role": "user", "content": "Bye"},
    ]
    plan = plan_chat(template, ChatSpec(messages=messages), "auto")
    assert "Greet back." not in plan.prompt
    assert "<｜Assistant｜>Hello!<｜end▁of▁sentence｜>" in plan.prompt


def test_json_grammar_allows_reasoning_first() -> None:
    template = load(LLAMA_DISTILL)
    spec = ChatSpec(messages=list(QUESTION), output_format=OutputFormat(None, "response_format"))
    plan = plan_chat(template, spec, "auto")
    assert plan.grammar is not None
    assert 'enclave-free-text "</think>"' in plan.grammar


def test_reserved_template_kwargs_rejected() -> None:
    template = load(LLAMA_DISTILL)
    spec = ChatSpec(messages=list(QUESTION), template_kwargs={"messages": []})
    with pytest.raises(InvalidRequestError) as caught:
        plan_chat(template, spec, "auto")
    assert caught.value.param == "chat_template_kwargs"
