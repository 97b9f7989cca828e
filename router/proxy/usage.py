"""The token usage a provider reports in a completion or a stream's chunk (chat completions), or
in a response object or the event carrying one (Responses API)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int


def usage_of(data: Any) -> Usage | None:
    """The usage block of a completion or chunk, when it has one with token counts."""
    usage = data.get("usage") if isinstance(data, dict) else None
    if not isinstance(usage, dict):
        return None
    prompt, completion = usage.get("prompt_tokens"), usage.get("completion_tokens")
    if not isinstance(prompt, int) or not isinstance(completion, int):
        return None
    return Usage(prompt, completion)


def responses_usage_of(data: Any) -> Usage | None:
    """The usage of a Responses API response object, or of an event carrying one
    (response.completed, response.incomplete, response.failed), when it has token counts."""
    if isinstance(data, dict) and isinstance(data.get("response"), dict):
        data = data["response"]
    usage = data.get("usage") if isinstance(data, dict) else None
    if not isinstance(usage, dict):
        return None
    given, made = usage.get("input_tokens"), usage.get("output_tokens")
    if not isinstance(given, int) or not isinstance(made, int):
        return None
    return Usage(given, made)
