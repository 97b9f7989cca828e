"""Scrubbing secrets out of provider text before it is relayed, logged or stored: the keys the
proxy knows, and anything shaped like a bearer token or an API key."""

from __future__ import annotations

import re
from collections.abc import Iterable

REDACTED = "[redacted]"
# A key shorter than this is a local server's placeholder ("ollama", "EMPTY", "lm-studio"), not a
# secret: scrubbing it out of answers would corrupt every answer that says the word.
ANSWER_KEY_CHARS = 12
# Shapes of secrets the proxy may not know: "Bearer <anything>", OpenAI-style "sk-..." keys
# (sk-proj-..., sk-ant-... too) and Groq's "gsk_..." keys.
_SHAPES = re.compile(
    r"(?i:\bbearer\s+)[^\s\"'`,;]{8,}|\bsk-[A-Za-z0-9_\-]{6,}|\bgsk_[A-Za-z0-9]{6,}",
)


class Redactor:
    """Replaces every known key, and every secret-shaped word, with "[redacted]"; in a 2xx body
    (`known_in`), the known keys of ANSWER_KEY_CHARS or more only (an answer may well show
    `Bearer <token>` in code, or say "ollama")."""

    def __init__(self, secrets: Iterable[str | None]) -> None:
        known = sorted({secret for secret in secrets if secret}, key=len, reverse=True)
        self._known = re.compile("|".join(map(re.escape, known))) if known else None
        in_answers = [secret for secret in known if len(secret) >= ANSWER_KEY_CHARS]
        self._known_bytes = (
            re.compile(b"|".join(re.escape(secret.encode()) for secret in in_answers))
            if in_answers
            else None
        )

    def known_in(self, raw: bytes) -> bytes:
        """`raw` (a provider's answer, as relayed) with every key the proxy knows replaced."""
        if self._known_bytes is None:
            return raw
        return self._known_bytes.sub(REDACTED.encode(), raw)

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
