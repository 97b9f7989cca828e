"""Reading labelled conversations as the bot reads them: whose context a turn has (the turn it
replies to, else the same speaker's previous turn) and how long before it that was; and who
wrote them, for cross-validation by writer."""

from __future__ import annotations

from typing import Any

import numpy as np

from router.text import normalize_text


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


def writer_of(conversation_id: str) -> str:
    """The writer (batch) a training conversation came from: its id's prefix (tr, tr2, ...)."""
    return conversation_id.split("-", 1)[0]


def conversation_writers(conversations: list[dict[str, Any]]) -> list[str]:
    """The training conversations' writers in sorted order: a writer's place is its fold's
    number in cross-validation and its group's in writer_groups."""
    return sorted({writer_of(c["conversation"]) for c in conversations})


def writer_groups(conversations: list[dict[str, Any]], rows: list[dict[str, Any]]) -> np.ndarray:
    """Per pool row, the number of its writer, or -1 when none is known: a writer whose
    conversation holds its text as a turn (the last read, for the few short texts such as "ok
    thanks" that several writers wrote), else the row's own `writer` mark (single messages
    written apart). Conversation writers are numbered first, in sorted order (as their folds
    are), then the writers of single messages only."""
    writers = conversation_writers(conversations)
    marked = sorted({str(row["writer"]) for row in rows if "writer" in row})
    writers += [w for w in marked if w not in writers]
    writer_of_text = {
        normalize_text(turn["text"]): writers.index(writer_of(c["conversation"]))
        for c in conversations
        for turn in c["turns"]
    }
    return np.array(
        [
            writer_of_text.get(
                normalize_text(row["text"]),
                writers.index(str(row["writer"])) if "writer" in row else -1,
            )
            for row in rows
        ]
    )
