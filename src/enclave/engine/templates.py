"""Chat templates: turn a list of messages into the prompt text a model was trained on.

The template normally comes from the GGUF file (``tokenizer.chat_template``) and is rendered
in Jinja's immutable sandbox, because a model file is untrusted input: a template can read
nothing but the values passed in and cannot change them. A file without a template, or a
``engine.chat_template`` setting, selects one of the named templates shipped in
``chat_templates/`` or a ``.jinja`` file.
"""

from __future__ import annotations

import datetime
import json
import logging
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

from jinja2 import TemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from enclave.errors import ConfigError, InvalidRequestError

logger = logging.getLogger(__name__)

FALLBACK_TEMPLATE = "chatml"


def named_templates() -> list[str]:
    """Return the names of the templates shipped with Enclave."""
    folder = resources.files("enclave.engine").joinpath("chat_templates")
    return sorted(entry.name.removesuffix(".jinja") for entry in folder.iterdir()
                  if entry.name.endswith(".jinja"))


def _raise_exception(message: str) -> None:
    raise TemplateError(message)


def _strftime_now(format_string: str) -> str:
    return datetime.datetime.now().strftime(format_string)


def _tojson(value: Any, indent: int | None = None, ensure_ascii: bool = False) -> str:
    return json.dumps(value, indent=indent, ensure_ascii=ensure_ascii)


@cache
def _environment() -> ImmutableSandboxedEnvironment:
    environment = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"]
    )
    environment.globals["raise_exception"] = _raise_exception
    environment.globals["strftime_now"] = _strftime_now
    environment.filters["tojson"] = _tojson
    return environment


class ChatTemplate:
    """A compiled chat template and the special tokens it may refer to."""

    def __init__(self, source: str, *, name: str, bos_token: str = "", eos_token: str = "") -> None:
        try:
            self._template = _environment().from_string(source)
        except TemplateError as exc:
            raise ConfigError(f"Chat template {name!r} does not compile: {exc}") from None
        self.source = source
        self.name = name
        self.bos_token = bos_token
        self.eos_token = eos_token

    def render(
        self,
        messages: list[dict[str, Any]],
        *,
        add_generation_prompt: bool = True,
        tools: list[dict[str, Any]] | None = None,
        **extra: Any,
    ) -> str:
        """Render messages into prompt text; raise InvalidRequestError if the template fails."""
        try:
            return self._template.render(
                messages=messages,
                add_generation_prompt=add_generation_prompt,
                tools=tools,
                bos_token=self.bos_token,
                eos_token=self.eos_token,
                **extra,
            )
        except TemplateError as exc:
            raise InvalidRequestError(
                f"The model's chat template rejected the messages: {exc}", param="messages"
            ) from None


def read_named_template(name: str) -> str:
    """Return the source of a shipped template, or of a .jinja file at that path."""
    path = Path(name)
    if path.suffix == ".jinja" and path.is_file():
        return path.read_text(encoding="utf-8")
    if name in named_templates():
        folder = resources.files("enclave.engine").joinpath("chat_templates")
        return folder.joinpath(f"{name}.jinja").read_text(encoding="utf-8")
    raise ConfigError(
        f"Chat template {name!r} not found. Use one of {', '.join(named_templates())} "
        "or the path of a .jinja file."
    )


def select_template(
    embedded: str | None, override: str | None, *, model_name: str, bos_token: str, eos_token: str
) -> ChatTemplate:
    """Pick the override, else the template stored in the model, else the fallback."""
    if override:
        return ChatTemplate(read_named_template(override), name=override,
                            bos_token=bos_token, eos_token=eos_token)
    if embedded:
        return ChatTemplate(embedded, name="gguf", bos_token=bos_token, eos_token=eos_token)
    logger.warning(
        "Model %s has no chat template; using the %r template. Set engine.chat_template if "
        "the model was trained on another format.", model_name, FALLBACK_TEMPLATE,
    )
    return ChatTemplate(read_named_template(FALLBACK_TEMPLATE), name=FALLBACK_TEMPLATE,
                        bos_token=bos_token, eos_token=eos_token)
