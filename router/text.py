"""Message text: the normal form two messages share to count as the same, its hash, and the
text of OpenAI-style chat messages."""

from __future__ import annotations

import hashlib
import itertools
import re
import unicodedata
from collections.abc import Iterator, Sequence
from typing import Any

_SPACES = re.compile(r"\s+")


def normalize_text(text: str) -> str:
    """The form two messages must share to count as the same text."""
    return _SPACES.sub(" ", unicodedata.normalize("NFKC", text)).strip().casefold()


def text_hash(text: str) -> str:
    return hashlib.sha256(normalize_text(text).encode("utf-8")).hexdigest()


def message_text(content: Any) -> str:
    """The text of a chat message's content: a string, or the text parts of a list of parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(
            part["text"]
            for part in content
            if isinstance(part, dict) and part.get("type") == "text" and "text" in part
        )
    return ""


def user_texts_backwards(
    messages: Sequence[dict[str, Any]] | None,
) -> Iterator[tuple[int, str]]:
    """(index, text) of each user message with text in an OpenAI-style list, newest first."""
    items = messages or ()
    for index in range(len(items) - 1, -1, -1):
        message = items[index]
        if isinstance(message, dict) and message.get("role") == "user":
            text = message_text(message.get("content"))
            if text.strip():
                yield index, text


def earlier_user_texts(history: Sequence[dict[str, Any]] | None, limit: int) -> list[str]:
    """The last `limit` user messages with text in an OpenAI-style history, oldest first."""
    texts = [text.strip() for _, text in itertools.islice(user_texts_backwards(history), limit)]
    return texts[::-1]


def last_user_text(messages: Sequence[dict[str, Any]]) -> tuple[str, list[dict[str, Any]]]:
    """The last user message with text, and the messages before it; ("", []) when none has."""
    for index, text in user_texts_backwards(messages):
        return text, list(messages[:index])
    return "", []
