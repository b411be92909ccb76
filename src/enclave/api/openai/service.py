"""Steps shared by chat and text completions: limits, sampling, deadlines and usage."""

from __future__ import annotations

import secrets
import time
from typing import Any

from starlette.requests import Request

from enclave.api.openai.protocol import SamplingFields
from enclave.engine.llama_engine import LlamaEngine
from enclave.engine.sampling import SamplingParams
from enclave.engine.types import Finished, GenerationRequest
from enclave.errors import ContextLengthError, InvalidRequestError
from enclave.logs import request_id_var

TIMEOUT_HEADER = "x-request-timeout"

# OpenAI's default temperature and top_p.
DEFAULT_TEMPERATURE = 1.0


def new_id(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(12)}"


def sampling_params(body: SamplingFields, n_vocab: int) -> SamplingParams:
    """Map the request's sampling fields onto the engine's, checking token ids."""
    bias: dict[int, float] = {}
    for key, value in (body.logit_bias or {}).items():
        if not key.isdigit() or int(key) >= n_vocab:
            raise InvalidRequestError(
                f"logit_bias key {key!r} is not a token id of this model (0 to {n_vocab - 1}).",
                param="logit_bias",
            )
        bias[int(key)] = value
    return SamplingParams(
        temperature=DEFAULT_TEMPERATURE if body.temperature is None else body.temperature,
        top_p=1.0 if body.top_p is None else body.top_p,
        top_k=body.top_k or 0,
        min_p=body.min_p or 0.0,
        presence_penalty=body.presence_penalty or 0.0,
        frequency_penalty=body.frequency_penalty or 0.0,
        repeat_penalty=body.repeat_penalty or 1.0,
        seed=body.seed,
        logit_bias=bias,
    )


def deadline_seconds(request: Request, configured: float | None) -> float | None:
    """Return the request's deadline: the X-Request-Timeout header, capped by the setting."""
    raw = request.headers.get(TIMEOUT_HEADER)
    if raw is None:
        return configured
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise InvalidRequestError(
            f"X-Request-Timeout must be a positive number of seconds, not {raw!r}.",
            param="X-Request-Timeout",
        )
    return min(value, configured) if configured else value


def generation_request(
    engine: LlamaEngine,
    prompt_tokens: list[int],
    params: SamplingParams,
    *,
    token_limit: int | None,
    stop: tuple[str, ...],
    timeout_s: float | None,
) -> GenerationRequest:
    """Check the prompt against the context window and build the engine request."""
    context = engine.context_size
    prompt_length = len(prompt_tokens)
    if token_limit is not None and prompt_length + token_limit > context:
        raise ContextLengthError(prompt_length, token_limit, context)
    if prompt_length >= context:
        raise ContextLengthError(prompt_length, 1, context)
    room = context - prompt_length
    max_tokens = token_limit or min(room, engine.default_max_tokens or room)
    return GenerationRequest(
        request_id=request_id_var.get() or new_id("req"),
        prompt_tokens=prompt_tokens,
        params=params,
        max_tokens=max_tokens,
        stop=stop,
        deadline=time.monotonic() + timeout_s if timeout_s else None,
        deadline_s=timeout_s,
    )


def usage(finished: Finished) -> dict[str, Any]:
    """Return the OpenAI usage object, with cached prompt tokens in prompt_tokens_details."""
    prompt = finished.prompt_tokens
    completion = finished.completion_tokens
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": finished.timings.cached_tokens},
    }
