"""Fenced code blocks in Markdown (``` and ~~~, by CommonMark's rules): where each opens, where
its code starts and where it closes, so a reply can be split without breaking one."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

_OPENING = re.compile(r"(?P<indent> {0,3})(?P<fence>`{3,}|~{3,})(?P<info>.*)")
_CLOSING = re.compile(r" {0,3}(?P<fence>`{3,}|~{3,})[ \t]*")


@dataclass(frozen=True)
class CodeBlock:
    """One fenced block: its opening line starts at `start`, its code at `body`, its closing line
    at `close` (None: not closed in the text read)."""

    start: int
    body: int
    close: int | None
    opening: str  # the opening line as written, e.g. "```python"
    closing: str  # a line that closes it: the opening's indentation and fence, e.g. "```"

    def holds(self, position: int) -> bool:
        """Whether text cut at `position` ends inside this block (before its closing line)."""
        return self.start < position and (self.close is None or position <= self.close)

    def closed_by(self, line: str) -> bool:
        """Whether `line` (without its line break) closes this block."""
        return _closes(line.removesuffix("\r"), self.closing.lstrip(" "))


def _lines(text: str, stop: int) -> Iterator[tuple[int, int, str]]:
    """(start, start of the next line, line without its line break) for each line of `text`
    that starts before `stop`."""
    start = 0
    while start < min(stop, len(text)):
        newline = text.find("\n", start)
        end = len(text) if newline < 0 else newline
        yield start, end + 1, text[start:end].removesuffix("\r")
        start = end + 1


def _opening(line: str) -> re.Match[str] | None:
    found = _OPENING.fullmatch(line)
    # A backtick fence's info string holds no backtick (else the line is inline code).
    if found is None or (found["fence"][0] == "`" and "`" in found["info"]):
        return None
    return found


def _closes(line: str, fence: str) -> bool:
    found = _CLOSING.fullmatch(line)
    return found is not None and found["fence"][0] == fence[0] and len(found["fence"]) >= len(fence)


def code_blocks(text: str, stop: int) -> Iterator[CodeBlock]:
    """The fenced code blocks of `text` that open before `stop`, read as far as `stop`: a block
    whose closing line starts at or after it is reported open."""
    lines = _lines(text, stop)
    for start, body, line in lines:
        found = _opening(line)
        if found is None:
            continue
        fence = found["fence"]
        closing = found["indent"] + fence
        for close, _, inner in lines:
            if _closes(inner, fence):
                yield CodeBlock(start, body, close, line, closing)
                break
        else:
            yield CodeBlock(start, body, None, line, closing)


def block_at(text: str, position: int) -> CodeBlock | None:
    """The code block that text cut at `position` ends inside, if any."""
    return next((block for block in code_blocks(text, position + 1) if block.holds(position)), None)
