"""Put tool definitions and earlier tool calls into a prompt.

A chat template that renders the ``tools`` variable (Qwen 2.5 and 3, Llama 3.1, Hermes,
Mistral and others) gets the tools and the history as they are. For a template that ignores
``tools``, Enclave describes the tools in a system message and asks for Hermes-style
``<tool_call>`` blocks, and rewrites earlier calls and results as plain text so that
templates that know only system, user and assistant messages can render them.
"""

from __future__ import annotations

import contextlib
import json
import logging
from functools import lru_cache
from typing import Any

from enclave.engine.templates import ChatTemplate
from enclave.errors import InvalidRequestError
from enclave.output.tool_calls import HERMES_CLOSE, HERMES_OPEN

logger = logging.getLogger(__name__)

_PROBE_TOOL = {
    "type": "function",
    "function": {
        "name": "enclave_probe_function",
        "description": "Probe.",
        "parameters": {"type": "object", "properties": {}},
    },
}
_PROBE_MESSAGES = [{"role": "user", "content": "probe"}]


@lru_cache(maxsize=32)
def template_supports_tools(template: ChatTemplate) -> bool:
    """Return whether the template renders tool definitions passed as ``tools``."""
    try:
        with_tools = template.render(list(_PROBE_MESSAGES), tools=[_PROBE_TOOL])
        without = template.render(list(_PROBE_MESSAGES), tools=None)
    except InvalidRequestError:
        return False
    return "enclave_probe_function" in with_tools and with_tools != without


def tools_instruction(tools: list[dict[str, Any]], required_name: str | None,
                      required: bool) -> str:
    """Return a system-prompt text that describes the tools and the call format."""
    definitions = "\n".join(json.dumps(tool, ensure_ascii=False) for tool in tools)
    lines = [
        "You can call the functions described below in JSON Schema to help with the "
        "user's request.",
        f"<tools>\n{definitions}\n</tools>",
        "To call a function, write one block per call, with the arguments as a JSON object:",
        f'{HERMES_OPEN}\n{{"name": "<function name>", "arguments": {{...}}}}\n{HERMES_CLOSE}',
        "The results come back in a later message between <tool_response> and "
        "</tool_response>.",
    ]
    if required_name:
        lines.append(f"You must call the function {required_name} now.")
    elif required:
        lines.append("You must call at least one function now.")
    else:
        lines.append("If no function is needed, answer directly.")
    return "\n".join(lines)


def inline_tool_messages(messages: list[dict[str, Any]],
                         instruction: str | None) -> list[dict[str, Any]]:
    """Rewrite tool calls and results as plain text and add the tool instruction."""
    converted: list[dict[str, Any]] = []
    for message in messages:
        role = message["role"]
        if role == "assistant" and message.get("tool_calls"):
            blocks = [_call_block(call) for call in message["tool_calls"]]
            text = "\n".join(part for part in [message.get("content") or "", *blocks] if part)
            converted.append({"role": "assistant", "content": text})
        elif role == "tool":
            converted.append({
                "role": "user",
                "content": f"<tool_response>\n{message.get('content') or ''}\n</tool_response>",
            })
        else:
            converted.append({key: value for key, value in message.items()
                              if key not in ("tool_calls", "tool_call_id")})
    if instruction:
        converted = _with_system_text(converted, instruction)
    return converted


def structured_arguments(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Return the messages with each call's arguments parsed into an object.

    Most tool-aware templates write ``arguments | tojson``, which needs an object rather
    than the JSON text the OpenAI API carries.
    """
    converted = []
    for message in messages:
        calls = message.get("tool_calls")
        if not calls:
            converted.append(message)
            continue
        parsed = []
        for call in calls:
            function = dict(call.get("function") or {})
            arguments = function.get("arguments")
            if isinstance(arguments, str):
                try:
                    function["arguments"] = json.loads(arguments)
                except json.JSONDecodeError:
                    logger.debug("Keeping tool-call arguments that are not valid JSON as text")
            parsed.append({**call, "function": function})
        converted.append({**message, "tool_calls": parsed})
    return converted


def has_tool_history(messages: list[dict[str, Any]]) -> bool:
    return any(m["role"] == "tool" or m.get("tool_calls") for m in messages)


def _call_block(call: dict[str, Any]) -> str:
    function = call.get("function") or {}
    arguments = function.get("arguments")
    if isinstance(arguments, str):
        # Arguments that are not valid JSON stay the text the client sent.
        with contextlib.suppress(json.JSONDecodeError):
            arguments = json.loads(arguments)
    body = json.dumps({"name": function.get("name"), "arguments": arguments}, ensure_ascii=False)
    return f"{HERMES_OPEN}\n{body}\n{HERMES_CLOSE}"


def _with_system_text(messages: list[dict[str, Any]], text: str) -> list[dict[str, Any]]:
    if messages and messages[0]["role"] == "system":
        first = messages[0]
        merged = f"{first.get('content') or ''}\n\n{text}".strip()
        return [{**first, "content": merged}, *messages[1:]]
    return [{"role": "system", "content": text}, *messages]
