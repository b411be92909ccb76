"""One error body per protocol for every failure.

The OpenAI shape, ``{"error": {"message", "type", "param", "code"}}``, is used everywhere
except under ``/api/``, where Ollama clients expect ``{"error": "message"}``. Both carry the
same status code and Retry-After header.

Exception handlers are installed once on the app. Messages never carry tracebacks, object
representations or framework internals: an unexpected exception becomes a fixed 500 text
and is logged with its traceback instead.
"""

from __future__ import annotations

import json
import logging
import re
from typing import Any, TypeVar

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from enclave.api.lifecycle import note_error
from enclave.errors import InvalidRequestError, RequestError, reason

logger = logging.getLogger(__name__)

ModelT = TypeVar("ModelT", bound=BaseModel)

_STATUS_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
}


def error_body(message: str, error_type: str, param: str | None = None,
               code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": error_type, "param": param, "code": code}}


def request_error_body(error: RequestError) -> dict[str, Any]:
    return error_body(error.message, error.error_type, error.param, error.code)


OLLAMA_PREFIX = "/api/"


def is_ollama_path(path: str) -> bool:
    """Return whether a request path belongs to the Ollama-compatible API."""
    return path.startswith(OLLAMA_PREFIX) or path == OLLAMA_PREFIX.rstrip("/")


def ollama_error_body(message: str) -> dict[str, Any]:
    return {"error": message}


def request_error_response(error: RequestError, path: str = "") -> JSONResponse:
    """Render a request error in the shape of the protocol that ``path`` belongs to."""
    headers = {"Retry-After": str(error.retry_after_s)} if error.retry_after_s else None
    body = ollama_error_body(error.message) if is_ollama_path(path) else request_error_body(error)
    return JSONResponse(body, status_code=error.status_code, headers=headers)


def describe_validation_error(
    error: ValidationError | RequestValidationError,
) -> InvalidRequestError:
    """Turn the first pydantic error into a message that names the field and the value."""
    first = error.errors()[0]
    location = [str(part) for part in first.get("loc", ()) if part != "body"]
    param = _dotted(location)
    message = str(first.get("msg", "invalid value")).removeprefix("Value error, ")
    if first.get("type") == "missing":
        text = f"Missing required field '{param}'."
    elif param:
        text = f"Invalid value for '{param}': {message}"
        if "input" in first and not isinstance(first["input"], dict | list):
            text += f" (got {first['input']!r})"
        text += "."
    else:
        text = f"Invalid request body: {message}."
    return InvalidRequestError(text, param=param or None, code="invalid_value")


# Names pydantic puts in an error location for the member of a union that failed, as in
# ("think", "bool") for a field typed bool | Literal[...]. No request field has these names.
_UNION_MEMBER_NAMES = frozenset({"str", "bool", "int", "float", "dict", "list"})


def _dotted(location: list[str]) -> str:
    text = ""
    for part in location:
        if part.isdigit():
            text += f"[{part}]"
        elif part in _UNION_MEMBER_NAMES or "[" in part:
            continue  # pydantic's name of a union member, not a field
        else:
            text += f".{part}" if text else part
    return text


async def parse_body(request: Request, model: type[ModelT]) -> ModelT:
    """Read and validate a JSON body; raise InvalidRequestError with a clean message."""
    raw = await request.body()
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InvalidRequestError(
            f"The request body is not valid JSON ({exc.msg} at position {exc.pos})."
            if isinstance(exc, json.JSONDecodeError) else "The request body is not UTF-8 JSON.",
            code="invalid_json",
        ) from None
    except ValueError as exc:
        # Python rejects integers of more than 4300 digits (sys.get_int_max_str_digits()).
        raise InvalidRequestError(f"The request body is not valid JSON ({reason(exc)}).",
                                  code="invalid_json") from None
    except RecursionError:
        raise InvalidRequestError(
            "The request body nests JSON arrays or objects too deeply to parse. Send a "
            "flatter body.",
            code="invalid_json",
        ) from None
    if not isinstance(data, dict):
        raise InvalidRequestError("The request body must be a JSON object.", code="invalid_json")
    if _LONE_SURROGATE_ESCAPE.search(raw):
        _reject_lone_surrogates(data)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise describe_validation_error(exc) from None


# A \uD800 to \uDFFF escape. JSON allows it, but one not paired with another is no
# character at all, and encoding the text as UTF-8 later (tokenizer, audit digest) fails.
_LONE_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89abcdefABCDEF]")


def _reject_lone_surrogates(data: dict[str, Any]) -> None:
    """Raise InvalidRequestError if a string in a parsed body contains an unpaired surrogate."""
    try:
        json.dumps(data, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidRequestError(
            f"The request body contains an unpaired UTF-16 surrogate "
            f"(\\u{ord(exc.object[exc.start]):04x}), which is not a Unicode character. "
            "Send the text as valid Unicode.",
            code="invalid_json",
        ) from None


def _error_response(request: Request, message: str, error_type: str,
                    status_code: int, headers: dict[str, str] | None = None) -> JSONResponse:
    path = request.url.path
    body = ollama_error_body(message) if is_ollama_path(path) else error_body(message, error_type)
    return JSONResponse(body, status_code=status_code, headers=headers)


def install_error_handlers(app: FastAPI) -> None:
    """Render every failure in the error shape of the request's protocol."""

    @app.exception_handler(RequestError)
    async def _request_error(request: Request, error: RequestError) -> JSONResponse:
        note_error(request, error)
        # A message can quote a request value, so the log gets it after the privacy mode.
        privacy = getattr(getattr(request.app.state, "enclave", None), "privacy", None)
        message = privacy.text_for_log(error.message) if privacy else error.message
        logger.info("Request rejected: status=%d code=%s message=%s",
                    error.status_code, error.code, message)
        return request_error_response(error, request.url.path)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, error: RequestValidationError) -> JSONResponse:
        return request_error_response(describe_validation_error(error), request.url.path)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, error: StarletteHTTPException) -> JSONResponse:
        if error.status_code == 404:
            message = f"Unknown route {request.method} {request.url.path}."
        elif error.status_code == 405:
            message = f"Method {request.method} is not allowed on {request.url.path}."
        else:
            message = str(error.detail)
        error_type = _STATUS_TYPES.get(error.status_code, "server_error")
        return _error_response(request, message, error_type, error.status_code,
                               getattr(error, "headers", None))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, error: Exception) -> JSONResponse:
        logger.exception("Unexpected error on %s %s", request.method, request.url.path)
        return _error_response(
            request,
            "The server had an internal error; the request id is in the X-Request-Id header "
            "and the server log.",
            "server_error",
            500,
        )
