"""Split a long reply into pieces a chat platform accepts, at the most natural boundary."""

from __future__ import annotations

import re

# Tried in order: paragraph, line, sentence end (Latin and CJK), word.
_BOUNDARIES = (
    re.compile(r"\n\s*\n"),
    re.compile(r"\n"),
    re.compile(r"(?<=[.!?])\s+|(?<=[。！？])"),
    re.compile(r"\s+"),
)


def _cut(text: str, limit: int) -> int:
    """Where to end the first piece of `text` (len(text) > limit)."""
    window = text[: limit + 1]
    for pattern in _BOUNDARIES:
        ends = [m.start() for m in pattern.finditer(window) if 0 < m.start() <= limit]
        # A boundary in the first third would leave a tiny piece; try a finer boundary instead.
        if ends and ends[-1] >= limit // 3:
            return ends[-1]
    return limit


def split_message(text: str, limit: int) -> list[str]:
    """Pieces of at most `limit` characters, none empty, cut at paragraph or sentence ends."""
    pieces: list[str] = []
    rest = text.strip()
    while len(rest) > limit:
        end = _cut(rest, limit)
        piece = rest[:end].rstrip()
        if piece:
            pieces.append(piece)
        rest = rest[end:].lstrip()
    if rest:
        pieces.append(rest)
    return pieces
