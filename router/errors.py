"""Errors that carry a short reason, safe to log and to store in the routing log."""

from __future__ import annotations

from types import ModuleType

STREAM_OPTIONS = "stream_options"


def sdk_error_reason(what: str, sdk: ModuleType, exc: Exception) -> str:
    """'what: timeout', 'what: connection failed', 'what: HTTP 429' or 'what: <error class>' for
    an error of an OpenAI-style SDK (openai and groq name their error classes alike)."""
    if isinstance(exc, sdk.APITimeoutError):
        return f"{what}: timeout"
    if isinstance(exc, sdk.APIConnectionError):
        return f"{what}: connection failed"
    if isinstance(exc, sdk.APIStatusError):
        return f"{what}: HTTP {exc.status_code}"
    return f"{what}: {type(exc).__name__}"


def refuses_stream_options(status: int, said: str | None, param: str | None) -> bool:
    """Whether an error answer refuses `stream_options` (a streamed answer's token counts), as an
    OpenAI-compatible server that predates it does: a 400 or 422 that names it."""
    return status in (400, 422) and (param == STREAM_OPTIONS or STREAM_OPTIONS in (said or ""))


class ReasonError(Exception):
    """A dependency gave no usable answer; `reason` is short and holds no secret."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
