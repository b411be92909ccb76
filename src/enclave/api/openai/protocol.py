"""Request bodies of the OpenAI-compatible API.

Fields whose meaning Enclave implements are declared here and validated. Fields that clients
add for other servers (vendor options, ``metadata``, ``store``) are accepted and ignored, and
their names are logged at debug level. A declared field that Enclave cannot honour is rejected
with a 400 that names it, instead of being silently ignored.
"""

from __future__ import annotations

import logging
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from enclave.errors import InvalidRequestError, UnsupportedParameterError

logger = logging.getLogger(__name__)

MAX_STOP_STRINGS = 16


class Lenient(BaseModel):
    """A body that keeps unknown fields so they can be logged and ignored."""

    model_config = ConfigDict(extra="allow")

    def log_ignored_fields(self, where: str) -> None:
        extra = sorted((self.model_extra or {}).keys())
        if extra:
            logger.debug("Ignoring fields not used by Enclave in %s: %s", where, ", ".join(extra))


class TextPart(BaseModel):
    model_config = ConfigDict(extra="allow")

    type: Literal["text"]
    text: str


class OtherPart(BaseModel):
    model_config = ConfigDict(extra="allow")

    type: str


class ChatMessage(Lenient):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[TextPart | OtherPart] | None = None
    name: str | None = None
    tool_calls: list[dict[str, Any]] | None = None
    tool_call_id: str | None = None
    # Sent back by clients that display DeepSeek-style reasoning (Cherry Studio does).
    reasoning_content: str | None = None

    def text(self, index: int) -> str:
        """Return the content as one string; raise if it holds non-text parts."""
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        texts = []
        for part in self.content:
            if isinstance(part, TextPart):
                texts.append(part.text)
            else:
                raise InvalidRequestError(
                    f"Content part of type {part.type!r} is not supported: the models served "
                    "here accept text only. Send the content as text parts.",
                    param=f"messages[{index}].content",
                )
        return "".join(texts)


class StreamOptions(Lenient):
    include_usage: bool = False


class SamplingFields(Lenient):
    """Fields shared by chat and text completions."""

    model: str = Field(min_length=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    temperature: Annotated[float, Field(ge=0.0, le=2.0)] | None = None
    top_p: Annotated[float, Field(gt=0.0, le=1.0)] | None = None
    max_tokens: Annotated[int, Field(ge=1)] | None = None
    stop: str | list[str] | None = None
    seed: int | None = None
    presence_penalty: Annotated[float, Field(ge=-2.0, le=2.0)] | None = None
    frequency_penalty: Annotated[float, Field(ge=-2.0, le=2.0)] | None = None
    logit_bias: dict[str, Annotated[float, Field(ge=-100.0, le=100.0)]] | None = None
    user: str | None = None
    n: int | None = None
    logprobs: bool | int | None = None
    # Extensions that llama.cpp and vLLM servers accept as well.
    top_k: Annotated[int, Field(ge=0)] | None = None
    min_p: Annotated[float, Field(ge=0.0, le=1.0)] | None = None
    repeat_penalty: Annotated[float, Field(gt=0.0)] | None = None

    @model_validator(mode="after")
    def _reject_unimplemented(self) -> SamplingFields:
        if self.n is not None and self.n != 1:
            raise UnsupportedParameterError(
                "n", f"n = {self.n} is not supported: Enclave returns one choice per request. "
                "Send n = 1 or omit it, and send parallel requests for more choices.",
            )
        if self.logprobs:
            raise UnsupportedParameterError(
                "logprobs", "logprobs is not supported yet. Omit it or send false.",
            )
        if isinstance(self.stop, list) and len(self.stop) > MAX_STOP_STRINGS:
            raise InvalidRequestError(
                f"stop has {len(self.stop)} strings; at most {MAX_STOP_STRINGS} are allowed.",
                param="stop",
            )
        return self

    def stop_strings(self) -> tuple[str, ...]:
        if self.stop is None:
            return ()
        values = [self.stop] if isinstance(self.stop, str) else self.stop
        return tuple(value for value in values if value)

    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)


class FunctionDefinition(Lenient):
    name: str = Field(pattern=r"^[A-Za-z0-9_.:-]{1,64}$")
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class ToolDefinition(Lenient):
    type: Literal["function"]
    function: FunctionDefinition


class JsonSchemaFormat(Lenient):
    name: str = Field(min_length=1, max_length=64)
    # "schema" is also a (deprecated) BaseModel method, so the field is renamed.
    schema_: dict[str, Any] = Field(alias="schema")
    strict: bool | None = None
    description: str | None = None


class ResponseFormat(Lenient):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaFormat | None = None

    @model_validator(mode="after")
    def _schema_present(self) -> ResponseFormat:
        if self.type == "json_schema" and self.json_schema is None:
            raise InvalidRequestError(
                "response_format of type json_schema needs a json_schema object with "
                "'name' and 'schema'.",
                param="response_format.json_schema",
            )
        return self


class ChatCompletionRequest(SamplingFields):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: Annotated[int, Field(ge=1)] | None = None
    top_logprobs: int | None = None
    tools: list[ToolDefinition] | None = None
    tool_choice: Literal["none", "auto", "required"] | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    response_format: ResponseFormat | None = None
    # Extensions of llama.cpp's server: "none" returns <think> reasoning inside the content.
    reasoning_format: Literal["none", "auto", "deepseek"] | None = None
    # Extra variables for the chat template, such as {"enable_thinking": false} (llama.cpp,
    # vLLM and SGLang accept the same field).
    chat_template_kwargs: dict[str, Any] | None = None
    # A GBNF grammar for the whole output, as llama.cpp's server takes it; accepted only
    # when engine.request_grammar is on.
    grammar: str | None = Field(None, min_length=1, max_length=65536)

    @model_validator(mode="after")
    def _reject_unimplemented_chat(self) -> ChatCompletionRequest:
        if self.top_logprobs:
            raise UnsupportedParameterError(
                "top_logprobs", "top_logprobs is not supported yet. Omit it.",
            )
        self.forced_function()  # validates a named tool_choice
        if self.grammar and (self.response_format or self.tools):
            raise InvalidRequestError(
                "grammar cannot be combined with response_format or tools, which set a "
                "grammar of their own. Send only one of them.",
                param="grammar",
            )
        return self

    def token_limit(self) -> int | None:
        """Return max_completion_tokens, else the older max_tokens."""
        return self.max_completion_tokens or self.max_tokens

    def forced_function(self) -> str | None:
        """Return the function a tool_choice object names; raise if it is malformed."""
        choice = self.tool_choice
        if not isinstance(choice, dict):
            if choice == "required" and not self.tools:
                raise InvalidRequestError(
                    "tool_choice 'required' needs at least one tool in 'tools'.",
                    param="tool_choice",
                )
            return None
        function = choice.get("function")
        name = function.get("name") if isinstance(function, dict) else None
        if choice.get("type") != "function" or not isinstance(name, str):
            raise InvalidRequestError(
                "tool_choice must be 'none', 'auto', 'required' or "
                '{"type": "function", "function": {"name": "..."}}.',
                param="tool_choice",
            )
        names = [tool.function.name for tool in self.tools or []]
        if name not in names:
            raise InvalidRequestError(
                f"tool_choice names the function {name!r}, which is not in 'tools' "
                f"({', '.join(names) or 'none given'}). Add it to 'tools' or fix the name.",
                param="tool_choice",
            )
        return name


class CompletionRequest(SamplingFields):
    prompt: str | list[str]
    echo: bool = False
    suffix: str | None = None
    best_of: int | None = None

    @model_validator(mode="after")
    def _reject_unimplemented_completion(self) -> CompletionRequest:
        if isinstance(self.prompt, list) and len(self.prompt) != 1:
            raise UnsupportedParameterError(
                "prompt", f"prompt is a list of {len(self.prompt)} strings; Enclave takes one "
                "prompt per request. Send a string.",
            )
        if self.echo:
            raise UnsupportedParameterError("echo", "echo is not supported. Omit it.")
        if self.suffix:
            raise UnsupportedParameterError("suffix", "suffix (fill-in-the-middle) is not "
                                            "supported. Omit it.")
        if self.best_of is not None and self.best_of != 1:
            raise UnsupportedParameterError("best_of", "best_of is not supported. Omit it.")
        return self

    def prompt_text(self) -> str:
        return self.prompt if isinstance(self.prompt, str) else self.prompt[0]
