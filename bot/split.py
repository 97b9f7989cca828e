"""Split a long reply into pieces a chat platform accepts, at the most natural boundary."""

from __future__ import annotations

import re
from collections.abc import Callable

Measure = Callable[[str], int]  # how a platform counts a message against its limit

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


def utf16_units(text: str) -> int:
    """Telegram's measure of a message: UTF-16 code units (an emoji beyond the BMP is two)."""
    return len(text) + sum(1 for character in text if ord(character) > 0xFFFF)


def _fitting(text: str, limit: int, measure: Measure) -> int:
    """How many characters of `text` start a piece that measures at most `limit`."""
    if measure is len:
        return limit
    low, high = 0, min(len(text), limit)  # no measure counts a character as less than one
    while low < high:
        middle = (low + high + 1) // 2
        if measure(text[:middle]) <= limit:
            low = middle
        else:
            high = middle - 1
    return low


def split_message(text: str, limit: int, measure: Measure = len) -> list[str]:
    """Pieces that measure at most `limit` (characters, or the platform's `measure`), none
    empty, cut at paragraph or sentence ends."""
    pieces: list[str] = []
    rest = text.strip()
    while measure(rest) > limit:
        end = _cut(rest, _fitting(rest, limit, measure))
        piece = rest[:end].rstrip()
        if piece:
            pieces.append(piece)
        rest = rest[end:].lstrip()
    if rest:
        pieces.append(rest)
    return pieces
