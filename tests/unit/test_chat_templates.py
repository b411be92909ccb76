"""Chat templates: the GGUF template, the named fallbacks, and the sandbox."""

from __future__ import annotations

from pathlib import Path

import pytest

from enclave.engine.templates import (
    FALLBACK_TEMPLATE,
    ChatTemplate,
    named_templates,
    read_named_template,
    select_template,
)
from enclave.errors import ConfigError, InvalidRequestError

MESSAGES = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Hello"},
]


def test_select_prefers_override_then_embedded_then_fallback() -> None:
    embedded = "{{ messages[0]['content'] }}"
    assert select_template(embedded, "llama3", model_name="m", bos_token="<s>",
                           eos_token="</s>").name == "llama3"
    assert select_template(embedded, None, model_name="m", bos_token="",
                           eos_token="").name == "gguf"
    assert select_template(None, None, model_name="m", bos_token="",
                           eos_token="").name == FALLBACK_TEMPLATE


def test_fallback_chatml_renders_generation_prompt() -> None:
    template = select_template(None, None, model_name="m", bos_token="", eos_token="")
    text = template.render(MESSAGES)
    assert text == ("<|im_start|>system\nBe brief.<|im_end|>\n"
                    "<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\n")


@pytest.mark.parametrize("name", named_templates())
def test_every_named_template_renders(name: str) -> None:
    template = ChatTemplate(read_named_template(name), name=name, bos_token="<s>",
                            eos_token="</s>")
    text = template.render([*MESSAGES, {"role": "assistant", "content": "Hi."},
                            {"role": "user", "content": "Bye"}])
    assert "Hello" in text
    assert "Bye" in text


def test_template_file_path_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "custom.jinja"
    path.write_text("{% for m in messages %}[{{ m.role }}]{{ m.content }}{% endfor %}")
    template = select_template(None, str(path), model_name="m", bos_token="", eos_token="")
    assert template.render(MESSAGES) == "[system]Be brief.[user]Hello"


def test_unknown_named_template_lists_choices() -> None:
    with pytest.raises(ConfigError) as caught:
        read_named_template("no-such-format")
    assert "chatml" in str(caught.value)


def test_template_raise_exception_becomes_400() -> None:
    template = ChatTemplate(
        "{% if messages[0]['role'] != 'user' %}{{ raise_exception('roles must start with "
        "user') }}{% endif %}", name="strict")
    with pytest.raises(InvalidRequestError) as caught:
        template.render(MESSAGES)
    assert "roles must start with user" in caught.value.message
    assert caught.value.param == "messages"


def test_sandbox_blocks_python_internals() -> None:
    template = ChatTemplate("{{ ''.__class__.__mro__[1].__subclasses__() }}", name="hostile")
    with pytest.raises(InvalidRequestError):
        template.render(MESSAGES)


def test_sandbox_blocks_mutation() -> None:
    template = ChatTemplate("{{ messages.append({'role': 'x'}) }}", name="hostile")
    with pytest.raises(InvalidRequestError):
        template.render(MESSAGES)


def test_template_that_does_not_compile_is_config_error() -> None:
    with pytest.raises(ConfigError) as caught:
        ChatTemplate("{% for %}", name="broken")
    assert "broken" in str(caught.value)
