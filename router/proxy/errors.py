"""Errors the proxy answers with, in the OpenAI wire format ({"error": {message, type, ...}})."""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

STATUSES = frozenset(status.value for status in HTTPStatus)
MODEL_CHARS = 200  # a model name echoed in an error is cut here
MESSAGE_CHARS = 200  # an unexpected exception's message is logged up to here
IDENTIFIER_CHARS = 60  # of a provider's error type or code, in logs

log = logging.getLogger(__name__)


class ProxyError(Exception):
    """Raised anywhere in a request's handling; the app turns it into one OpenAI-format reply."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type_: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
        headers: dict[str, str] | None = None,
        provider_words: bool = False,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type_
        self.code = code
        self.param = param
        # Sent with the reply, e.g. a provider 429's Retry-After and x-ratelimit-* headers.
        self.headers = headers or {}
        # The message is the provider's own: it may quote the request (the family's words).
        self.provider_words = provider_words

    def logged(self) -> str:
        """What logs and the routing log keep of it: the message, or of the provider's own words
        only the status, type and code (privacy.store_prompts and erasure never reach them)."""
        if not self.provider_words:
            return self.message
        code = f", {self.code[:IDENTIFIER_CHARS]}" if self.code else ""
        kind = self.type[:IDENTIFIER_CHARS]
        return f"HTTP {self.status} from the provider: {kind}{code}"

    def body(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }

    def response(self, headers: dict[str, str] | None = None) -> JSONResponse:
        return JSONResponse(
            self.body(), status_code=self.status, headers=self.headers | (headers or {})
        )


def bad_request(message: str, param: str | None = None) -> ProxyError:
    return ProxyError(400, message, param=param, code="invalid_request")


def unauthorized(message: str) -> ProxyError:
    return ProxyError(401, message, code="invalid_api_key")


def provider_failed(message: str) -> ProxyError:
    return ProxyError(502, message, type_="upstream_error", code="provider_error")


def route_error(method: str, path: str, status: int) -> ProxyError:
    """OpenAI's answer to a path it does not serve (404) or a method a path does not take (405)."""
    if status == 405:
        return ProxyError(405, f"Invalid method for URL ({method} {path})")
    if status == 404:
        return ProxyError(404, f"Invalid URL ({method} {path})")
    return ProxyError(status, HTTPStatus(status).phrase if status in STATUSES else "HTTP error")


def model_not_found(model: str) -> ProxyError:
    return ProxyError(
        404,
        f"The model `{model[:MODEL_CHARS]}` does not exist or you do not have access to it.",
        param="model",
        code="model_not_found",
    )


def model_not_allowed(model: str) -> ProxyError:
    return ProxyError(
        403,
        f"The model `{model[:MODEL_CHARS]}` is not allowed for this key.",
        param="model",
        code="model_not_allowed",
    )


def provider_timeout(message: str) -> ProxyError:
    return ProxyError(504, message, type_="upstream_error", code="provider_timeout")


async def _proxy_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ProxyError)
    return exc.response()


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    error = route_error(request.method, request.url.path, exc.status_code)
    return error.response(dict(exc.headers) if exc.headers else None)


async def _server_error(request: Request, exc: Exception) -> Response:
    # Logged (one line) and counted where the app lets the exception go: see `failure_line`.
    return ProxyError(500, "the proxy failed on this request", type_="server_error").response()


def failure_line(exc: BaseException) -> str:
    """One line for an unexpected failure: its type, message (cut) and where it was raised."""
    where = ""
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    if tb is not None:
        where = f" at {tb.tb_frame.f_code.co_filename.rsplit('/', 1)[-1]}:{tb.tb_lineno}"
    message = str(exc).replace("\n", " ")[:MESSAGE_CHARS]
    return f"{type(exc).__name__}: {message}{where}"


def exception_handlers() -> dict[Any, Any]:
    """Starlette's exception handlers: every failure answered as one OpenAI-format error."""
    return {ProxyError: _proxy_error, HTTPException: _http_error, Exception: _server_error}
