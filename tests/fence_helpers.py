"""Markdown code fences as a reader's Markdown sees them, to check how a reply was split."""

from __future__ import annotations

import re

FENCE = re.compile(r" {0,3}(`{3,}|~{3,})")


def open_fence(piece: str) -> str | None:
    """The fence of the code block a reader's Markdown sees still open at the end of `piece`."""
    fence = None
    for line in piece.split("\n"):
        found = FENCE.match(line)
        if found is None:
            continue
        run = found[1]
        if fence is None:
            fence = run
        elif run[0] == fence[0] and len(run) >= len(fence) and not line[found.end() :].strip():
            fence = None
    return fence


def without_fence_lines(text: str) -> str:
    """The text's characters but blanks and fence lines (which a split may add)."""
    kept = [line for line in text.split("\n") if not FENCE.match(line)]
    return "".join("".join(kept).split())


def parser_code(functions: int) -> str:
    """Python a model might answer with: indented lines, `# comments`, `*args`."""
    return "\n".join(
        f"def step_{n}(*args):\n    # read field {n}\n    return parse(args[{n}])"
        for n in range(functions)
    )


def code_answer(code: str) -> str:
    """An answer with `code` in one ```python block between two lines of text."""
    return f"Here is the parser:\n\n```python\n{code}\n```\n\nCall step_0 first."


def fenced_code(piece: str) -> str:
    """The code of the one ```python block in `piece`."""
    found = re.search(r"^```python\n(.*?)\n```$", piece, re.DOTALL | re.MULTILINE)
    assert found is not None, piece
    return found[1]
