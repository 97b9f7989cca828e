"""Scrubbing secrets out of provider text before it is relayed, logged or stored: the keys the
proxy knows, and anything shaped like a bearer token or an API key."""

from __future__ import annotations

import re
from collections.abc import Iterable

REDACTED = "[redacted]"
# Shapes of secrets the proxy may not know: "Bearer <anything>", OpenAI-style "sk-..." keys
# (sk-proj-..., sk-ant-... too) and Groq's "gsk_..." keys.
_SHAPES = re.compile(
    r"(?i:\bbearer\s+)[^\s\"'`,;]{8,}|\bsk-[A-Za-z0-9_\-]{6,}|\bgsk_[A-Za-z0-9]{6,}",
)


class Redactor:
    """Replaces every known key, and every secret-shaped word, with "[redacted]"."""

    def __init__(self, secrets: Iterable[str | None]) -> None:
        known = sorted({secret for secret in secrets if secret}, key=len, reverse=True)
        self._known = re.compile("|".join(map(re.escape, known))) if known else None

    def __call__(self, text: str) -> str:
        if self._known is not None:
            text = self._known.sub(REDACTED, text)
        return _SHAPES.sub(self._shape, text)

    @staticmethod
    def _shape(match: re.Match[str]) -> str:
        word = match.group(0)
        if word[:6].lower() == "bearer":
            return word[: len(word) - len(word[6:].lstrip())] + REDACTED
        return REDACTED
