"""Split a long reply into pieces a chat platform accepts, at the most natural boundary, each
piece's code blocks closed so that it reads right on its own."""

from __future__ import annotations

import re
from collections.abc import Callable

from bot.fences import CodeBlock, block_at

Measure = Callable[[str], int]  # how a platform counts a message against its limit

# Tried in order: paragraph, line, sentence end (Latin and CJK), word.
_BOUNDARIES = (
    re.compile(r"\n\s*\n"),
    re.compile(r"\n"),
    re.compile(r"(?<=[.!?])\s+|(?<=[。！？])"),
    re.compile(r"\s+"),
)
_BLANK_LINES = re.compile(r"\A(?:[ \t]*\r?\n)+")


def _cut(text: str, limit: int, earliest: int = 1) -> int:
    """Where to end the first piece of `text` (len(text) > limit), at `earliest` or after."""
    window = text[: limit + 1]
    # A boundary in the first third would leave a tiny piece; try a finer boundary instead.
    first = max(limit // 3, earliest)
    for pattern in _BOUNDARIES:
        ends = [m.start() for m in pattern.finditer(window) if first <= m.start() <= limit]
        if ends:
            return ends[-1]
    return max(limit, earliest)  # at least a character: a piece over a tiny limit, not a hang


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


def _inside(text: str, limit: int, measure: Measure, block: CodeBlock) -> tuple[str, str] | None:
    """The first piece cut inside `block` and closed by a fence line, and the rest, which opens
    the block again; None when no code fits beside the fence lines."""
    closing = "\n" + block.closing
    fit = _fitting(text, limit - measure(closing), measure)
    if fit <= block.body:
        return None
    end = _cut(text, fit, earliest=block.body + 1)
    inner = block_at(text, end)
    if inner is None or inner.start != block.start:  # the cut left the block: cut before it
        return None
    # Only the line breaks go: the next line of code keeps its indentation.
    code = _BLANK_LINES.sub("", text[end:])
    line, _, after = code.partition("\n")
    if block.closed_by(line):  # nothing left of the block but its closing line
        return text[:end].rstrip() + closing, after.lstrip()
    return text[:end].rstrip() + closing, block.opening + "\n" + code


def _first_piece(text: str, limit: int, measure: Measure) -> tuple[str, str]:
    """The first piece of `text` (which measures over `limit`) and the text after it."""
    fit = _fitting(text, limit, measure)
    end = _cut(text, fit)
    block = block_at(text, end)
    if block is not None:
        # A block that starts late enough goes whole to the next piece; else it is cut in two.
        inside = None if block.start >= fit // 3 else _inside(text, limit, measure, block)
        if inside is not None:
            return inside
        if block.start > 0:
            return text[: block.start].rstrip(), text[block.start :]
        # Else the opening line is too long to repeat within the limit: cut as plain text.
    return text[:end].rstrip(), text[end:].lstrip()


def split_message(text: str, limit: int, measure: Measure = len) -> list[str]:
    """Pieces that measure at most `limit` (characters, or the platform's `measure`), none
    empty, cut at paragraph or sentence ends; a code block cut in two is closed at the end of
    one piece and opened again, with the same opening line, at the start of the next."""
    pieces: list[str] = []
    rest = text.strip()
    # The first limit+1 characters measure over the limit exactly when the whole does (no
    # character measures less than one), and only they are measured: a long text stays fast.
    while measure(rest[: limit + 1]) > limit:
        piece, rest = _first_piece(rest, limit, measure)
        if piece:
            pieces.append(piece)
    if rest:
        pieces.append(rest)
    return pieces
