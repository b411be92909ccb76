"""Exceptions shared by every layer.

The tree, with the HTTP status each request error maps to::

    EnclaveError
    ├── ConfigError                    invalid settings; raised at start-up
    ├── ModelLoadError                 a model file is missing or cannot be loaded
    ├── EngineFailure                  the engine died; /health turns to 503
    └── RequestError                   one request failed; the server carries on
        ├── InvalidRequestError        400
        │   ├── UnsupportedParameterError   400, names the field
        │   ├── ContextLengthError          400, names both token counts
        │   └── PayloadTooLargeError        413, body over server.max_body_mb
        ├── AuthenticationError        401
        ├── PermissionDeniedError      403
        ├── ModelNotFoundError         404
        ├── RateLimitError             429 + Retry-After
        │   └── QueueFullError         429 + Retry-After
        ├── ClientClosedError          499, for the log and audit trail only
        ├── UnsupportedRouteError      501
        ├── EngineUnavailableError     503 + Retry-After
        └── DeadlineExceededError      504

Request errors carry the fields of the OpenAI error body (message, type, param, code) so that
every protocol layer renders them the same way. Nothing here imports a web framework.
"""

from __future__ import annotations


class EnclaveError(Exception):
    """Base class of every error Enclave raises on purpose."""


class ConfigError(EnclaveError):
    """Invalid settings. The message names the setting, the value and the fix."""


class ModelLoadError(EnclaveError):
    """A model file is missing, unreadable or not a model llama.cpp can load."""


class EngineFailure(EnclaveError):
    """The engine can no longer serve requests (for example a failed decode)."""


class RequestError(EnclaveError):
    """A failure of one request, rendered to the client in the protocol's error shape."""

    status_code = 500
    error_type = "server_error"

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        retry_after_s: int | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code
        self.retry_after_s = retry_after_s


class InvalidRequestError(RequestError):
    status_code = 400
    error_type = "invalid_request_error"


class UnsupportedParameterError(InvalidRequestError):
    def __init__(self, param: str, message: str) -> None:
        super().__init__(message, param=param, code="unsupported_parameter")


class ContextLengthError(InvalidRequestError):
    def __init__(self, prompt_tokens: int, requested_tokens: int, context_size: int) -> None:
        message = (
            f"This model's context window is {context_size} tokens, but the request needs "
            f"{prompt_tokens + requested_tokens} ({prompt_tokens} in the prompt and "
            f"{requested_tokens} to generate). Shorten the messages or lower max_tokens."
        )
        super().__init__(message, param="messages", code="context_length_exceeded")
        self.prompt_tokens = prompt_tokens
        self.context_size = context_size


class AuthenticationError(RequestError):
    status_code = 401
    error_type = "authentication_error"


class PermissionDeniedError(RequestError):
    status_code = 403
    error_type = "permission_error"


class PayloadTooLargeError(InvalidRequestError):
    status_code = 413

    def __init__(self, limit_bytes: int) -> None:
        super().__init__(
            f"The request body is larger than {limit_bytes} bytes, the limit set by "
            "server.max_body_mb. Send a smaller body or raise the setting.",
            code="request_too_large",
        )


# Maximum characters of a model name quoted back in an error, since a client can send any
# string.
MAX_QUOTED_MODEL_CHARS = 200


class ModelNotFoundError(RequestError):
    status_code = 404
    error_type = "invalid_request_error"

    def __init__(self, model: str, available: list[str]) -> None:
        names = ", ".join(available) if available else "none"
        if len(model) > MAX_QUOTED_MODEL_CHARS:
            model = model[:MAX_QUOTED_MODEL_CHARS] + "..."
        super().__init__(
            f"The model '{model}' does not exist. Available models: {names}.",
            param="model",
            code="model_not_found",
        )


class RateLimitError(RequestError):
    status_code = 429
    error_type = "rate_limit_error"


class QueueFullError(RateLimitError):
    def __init__(self, queue_size: int, retry_after_s: int) -> None:
        super().__init__(
            f"The server is busy: all {queue_size} places in the waiting queue are taken. "
            f"Retry after {retry_after_s} s.",
            code="queue_full",
            retry_after_s=retry_after_s,
        )


class ClientClosedError(RequestError):
    """The client disconnected before the response; 499 as nginx logs it."""

    status_code = 499
    error_type = "invalid_request_error"

    def __init__(self) -> None:
        super().__init__("The client closed the connection, so the generation was cancelled.",
                         code="client_closed_request")


class UnsupportedRouteError(RequestError):
    """A route that a compatible API has but Enclave deliberately does not implement."""

    status_code = 501
    error_type = "invalid_request_error"


class EngineUnavailableError(RequestError):
    status_code = 503
    error_type = "server_error"


class DeadlineExceededError(RequestError):
    status_code = 504
    error_type = "timeout_error"

    def __init__(self, deadline_s: float) -> None:
        super().__init__(
            f"The request did not finish within its deadline of {deadline_s:g} s. "
            "Raise the deadline (X-Request-Timeout header or engine.request_timeout_s) "
            "or ask for fewer tokens.",
            code="deadline_exceeded",
        )


def reason(error: BaseException) -> str:
    """Return an exception's message on one line and without a final period.

    Messages of drivers and parsers often end with a period or span lines. This form can be
    quoted inside a sentence that ends with its own period.
    """
    return " ".join(str(error).split()).rstrip(".")
