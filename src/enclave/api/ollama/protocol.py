"""Request bodies of the Ollama API and the mapping of its ``options`` onto sampling.

Unknown fields and options are accepted and ignored, as Ollama does; their names are
logged at debug level. Values Enclave cannot honour (images, a raw ``context`` array, a
template override) are rejected with 400 and a message that names the field.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from enclave.engine.sampling import SamplingParams
from enclave.errors import InvalidRequestError, UnsupportedParameterError
from enclave.output.tool_calls import new_call_id

logger = logging.getLogger(__name__)

# Ollama's defaults for these options (docs/modelfile.mdx, "Valid Parameters and Values").
DEFAULT_TEMPERATURE = 0.8
DEFAULT_TOP_K = 40
DEFAULT_TOP_P = 0.9
DEFAULT_REPEAT_LAST_N = 64
DEFAULT_REPEAT_PENALTY = 1.1

# Options Ollama uses to place or size the model; Enclave sets these per server.
_SERVER_OPTIONS = frozenset({
    "numa", "num_batch", "num_gpu", "main_gpu", "low_vram", "f16_kv", "logits_all",
    "vocab_only", "use_mmap", "use_mlock", "embedding_only", "num_thread", "num_keep",
    "penalize_newline", "typical_p", "tfs_z", "mirostat", "mirostat_tau", "mirostat_eta",
    "draft_num_predict",
})
_SAMPLING_OPTIONS = frozenset({
    "temperature", "top_p", "top_k", "min_p", "seed", "num_predict", "stop", "repeat_penalty",
    "repeat_last_n", "presence_penalty", "frequency_penalty", "num_ctx",
})


class OllamaBody(BaseModel):
    """A body that keeps unknown fields so they can be logged and ignored."""

    model_config = ConfigDict(extra="allow")

    def log_ignored_fields(self, where: str) -> None:
        extra = sorted((self.model_extra or {}).keys())
        if extra:
            logger.debug("Ignoring fields not used by Enclave in %s: %s", where, ", ".join(extra))


class ToolCallFunction(OllamaBody):
    name: str
    arguments: dict[str, Any] | str = Field(default_factory=dict)
    index: int | None = None


class ToolCall(OllamaBody):
    id: str | None = None
    function: ToolCallFunction


class Message(OllamaBody):
    role: Literal["system", "user", "assistant", "tool"]
    content: str = ""
    thinking: str | None = None
    images: list[str] | None = None
    tool_calls: list[ToolCall] | None = None
    tool_name: str | None = None
    tool_call_id: str | None = None

    @field_validator("role", mode="before")
    @classmethod
    def _lower_role(cls, value: Any) -> Any:
        # Ollama lower-cases the role before checking it.
        return value.lower() if isinstance(value, str) else value

    def neutral(self, index: int) -> dict[str, Any]:
        """Return the message in the OpenAI field names the chat planner works with."""
        if self.images:
            raise UnsupportedParameterError(
                f"messages[{index}].images",
                "Images are not supported: the models served here accept text only. Remove "
                "the images.",
            )
        entry: dict[str, Any] = {"role": self.role, "content": self.content}
        if self.thinking:
            entry["reasoning_content"] = self.thinking
        if self.tool_calls:
            entry["tool_calls"] = [_openai_call(call) for call in self.tool_calls]
            if not self.content:
                entry["content"] = None
        if self.role == "tool":
            if self.tool_name:
                entry["name"] = self.tool_name
            if self.tool_call_id:
                entry["tool_call_id"] = self.tool_call_id
        return entry


def _openai_call(call: ToolCall) -> dict[str, Any]:
    arguments = call.function.arguments
    text = arguments if isinstance(arguments, str) else json.dumps(arguments, ensure_ascii=False)
    return {"id": call.id or new_call_id(), "type": "function",
            "function": {"name": call.function.name, "arguments": text}}


class FunctionSpec(OllamaBody):
    name: str = Field(min_length=1)
    description: str | None = None
    parameters: dict[str, Any] | None = None


class Tool(OllamaBody):
    type: Literal["function"] = "function"
    function: FunctionSpec


class GenerationBody(OllamaBody):
    """Fields shared by /api/chat and /api/generate."""

    model: str = Field(min_length=1)
    stream: bool = True
    format: Literal["", "json"] | dict[str, Any] | None = None
    options: dict[str, Any] | None = None
    # A boolean, or a thinking level ("low", "medium", "high", "max") that means true here.
    think: bool | Literal["low", "medium", "high", "max"] | None = None
    keep_alive: float | str | None = None
    logprobs: bool | None = None

    def check_supported(self) -> None:
        if self.logprobs:
            raise UnsupportedParameterError("logprobs",
                                            "logprobs is not supported yet. Omit it.")

    def think_flag(self) -> bool | None:
        return None if self.think is None else bool(self.think)


class ChatBody(GenerationBody):
    messages: list[Message] = Field(default_factory=list)
    tools: list[Tool] | None = None
    # Enclave extension (Ollama has no such field): "required" forces a tool call, as
    # OpenAI's tool_choice does; small models rarely call a tool on their own.
    tool_choice: Literal["none", "auto", "required"] | None = None


class GenerateBody(GenerationBody):
    prompt: str = ""
    system: str | None = None
    suffix: str | None = None
    template: str | None = None
    raw: bool = False
    context: list[int] | None = None
    images: list[str] | None = None

    def check_supported(self) -> None:
        super().check_supported()
        for name, value, reason in (
            ("suffix", self.suffix, "fill-in-the-middle is not supported"),
            ("template", self.template, "the chat template is set per model by the server "
             "(engine.chat_template)"),
            ("context", self.context, "send the conversation with /api/chat instead"),
            ("images", self.images, "the models served here accept text only"),
        ):
            if value:
                raise UnsupportedParameterError(name, f"{name} is not supported: {reason}. "
                                                      "Omit it.")


class ShowBody(OllamaBody):
    # Older clients send the model as "name".
    model: str | None = None
    name: str | None = None
    verbose: bool = False

    def model_id(self) -> str:
        value = self.model or self.name
        if not value:
            raise InvalidRequestError("Missing required field 'model'.", param="model")
        return value


class EmbedBody(OllamaBody):
    model: str = Field(min_length=1)
    input: Any = None
    truncate: bool = True
    dimensions: int | None = Field(None, ge=1)
    options: dict[str, Any] | None = None
    keep_alive: float | str | None = None


class EmbeddingsBody(OllamaBody):
    model: str = Field(min_length=1)
    prompt: str = ""
    options: dict[str, Any] | None = None
    keep_alive: float | str | None = None


@dataclass(frozen=True, slots=True)
class GenerationOptions:
    """The ``options`` of one request, mapped onto Enclave's terms."""

    params: SamplingParams
    # None: generate until a stop or the end of the context.
    num_predict: int | None
    # None: the served context; never larger than it.
    num_ctx: int | None
    stop: tuple[str, ...]


def generation_options(options: dict[str, Any] | None, context_size: int) -> GenerationOptions:
    """Validate ``options`` and map them to sampling parameters and limits.

    ``num_ctx`` above the served context is capped at it: Ollama would reload the model with
    a larger window, but Enclave sizes the KV cache once when it loads the model.
    """
    values = dict(options or {})
    _log_unused(values)

    num_ctx = _integer(values, "num_ctx", minimum=1)
    if num_ctx is not None and num_ctx >= context_size:
        if num_ctx > context_size:
            logger.debug("options.num_ctx %d is above the served context; using %d",
                         num_ctx, context_size)
        num_ctx = None
    window = num_ctx or context_size

    repeat_last_n = _integer(values, "repeat_last_n", minimum=-1)
    if repeat_last_n == -1:
        repeat_last_n = window
    top_k = _integer(values, "top_k", minimum=0)
    params = SamplingParams(
        temperature=_number(values, "temperature", DEFAULT_TEMPERATURE, minimum=0.0),
        top_p=_number(values, "top_p", DEFAULT_TOP_P, minimum=0.0, maximum=1.0),
        top_k=DEFAULT_TOP_K if top_k is None else top_k,
        min_p=_number(values, "min_p", 0.0, minimum=0.0, maximum=1.0),
        presence_penalty=_number(values, "presence_penalty", 0.0),
        frequency_penalty=_number(values, "frequency_penalty", 0.0),
        # Ollama's default is 1.1 (DefaultOptions in its api/types.go); 0 switches the
        # penalty off, as 1.0 does.
        repeat_penalty=_number(values, "repeat_penalty", DEFAULT_REPEAT_PENALTY,
                               minimum=0.0) or 1.0,
        repeat_last_n=DEFAULT_REPEAT_LAST_N if repeat_last_n is None else repeat_last_n,
        seed=_integer(values, "seed"),
    )
    return GenerationOptions(
        params=params,
        num_predict=_num_predict(values),
        num_ctx=num_ctx,
        stop=_stop(values),
    )


def _log_unused(values: dict[str, Any]) -> None:
    ignored = sorted(key for key in values if key not in _SAMPLING_OPTIONS)
    if ignored:
        known = [key for key in ignored if key in _SERVER_OPTIONS]
        logger.debug("Ignoring options not used by Enclave: %s (server-side: %s)",
                     ", ".join(ignored), ", ".join(known) or "none")


def _number(values: dict[str, Any], name: str, default: float, *,
            minimum: float | None = None, maximum: float | None = None) -> float:
    value = values.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidRequestError(f"options.{name} must be a number, not {value!r}.",
                                  param=f"options.{name}")
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        bounds = f"between {minimum} and {maximum}" if maximum is not None else (
            f"at least {minimum}")
        raise InvalidRequestError(f"options.{name} must be {bounds}, not {value}.",
                                  param=f"options.{name}")
    return float(value)


def _integer(values: dict[str, Any], name: str, *, minimum: int | None = None) -> int | None:
    value = values.get(name)
    if value is None:
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidRequestError(f"options.{name} must be an integer, not {value!r}.",
                                  param=f"options.{name}")
    if minimum is not None and value < minimum:
        raise InvalidRequestError(f"options.{name} must be at least {minimum}, not {value}.",
                                  param=f"options.{name}")
    return value


def _num_predict(values: dict[str, Any]) -> int | None:
    value = _integer(values, "num_predict")
    if value is None or value in (-1, -2):
        return None  # -1: no limit, -2: fill the context; both end at the context here
    if value < 1:
        raise InvalidRequestError(
            f"options.num_predict must be a positive number of tokens, or -1 for no limit, "
            f"not {value}.",
            param="options.num_predict",
        )
    return value


def _stop(values: dict[str, Any]) -> tuple[str, ...]:
    value = values.get("stop")
    if value is None:
        return ()
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(item, str) for item in items):
        raise InvalidRequestError("options.stop must be a string or a list of strings.",
                                  param="options.stop")
    if len(items) > 16:
        raise InvalidRequestError(
            f"options.stop has {len(items)} strings; at most 16 are allowed.",
            param="options.stop",
        )
    return tuple(item for item in items if item)
