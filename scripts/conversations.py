"""Reading labelled conversations as the bot reads them: whose context a turn has (the turn it
replies to, else the same speaker's previous turn) and how long before it that was."""

from __future__ import annotations

from typing import Any


def context_of(turns: list[dict[str, Any]], index: int) -> int | None:
    """The turn a turn's context is: the one it replies to, else the same speaker's previous
    turn (every earlier turn is one speaker's when the conversation names none)."""
    turn = turns[index]
    if "reply_to" in turn:
        return int(turn["reply_to"])
    speaker = turn.get("speaker")
    for earlier in range(index - 1, -1, -1):
        if turns[earlier].get("speaker") == speaker:
            return earlier
    return None


def gap_since(turns: list[dict[str, Any]], earlier: int, index: int) -> float:
    """Seconds from turn `earlier` to turn `index` (each turn's gap is since the one before)."""
    return float(sum(turns[i].get("gap_s", 0) for i in range(earlier + 1, index + 1)))
