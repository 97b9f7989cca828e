"""What processes on one database tell each other (NOTIFY payloads, JSON under 8000 bytes): a
conversation's turn (its task and how sure routing was of it, time, text as far as prompts are
kept, the sender's own words apart when a quote is under them, and its vector as float16 in
base64; the same of the task behind it when it is a reaction), a reset, an erasure's scope, the
pool entries an erasure removed. Each names the process that sent it."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from router.signals.continuity import PreviousTurn, sure_share

MAX_PAYLOAD = 7_900  # PostgreSQL refuses 8000 bytes or more
TEXT_STEPS = (300, 120, 40, 0)  # a turn too big with its text is sent with less of it


@dataclass(frozen=True)
class Turn:
    sender: str
    conv_key: str
    user_key: str | None
    turn: PreviousTurn


def _vector(encoded: str | None, dim: int) -> np.ndarray | None:
    if not encoded:
        return None
    raw = np.frombuffer(base64.b64decode(encoded), dtype=np.float16)
    return raw.astype(np.float32) if len(raw) == dim else None


def _packed(vector: np.ndarray | None) -> str | None:
    if vector is None:
        return None
    return base64.b64encode(np.asarray(vector, dtype=np.float16).tobytes()).decode()


def encode_turn(
    sender: str,
    conv_key: str,
    user_key: str | None,
    turn: PreviousTurn,
    vector: np.ndarray | None,
    keep_text: bool,
    behind_vector: np.ndarray | None = None,
) -> str | None:
    """The turn as a payload, with the task behind it when it is a reaction (and that task's
    vector, `behind_vector`); None when even its keys alone are too big to send."""
    # Less text first; then, for a reaction still too big (a wide embedder's two vectors), the
    # turn without its task behind rather than nothing.
    attempts = (None,) if turn.task_behind is None else (turn.task_behind, None)
    for behind in attempts:
        for chars in TEXT_STEPS:
            body: dict[str, Any] = {"o": sender, "c": conv_key, "u": user_key}
            body.update(_turn_body(turn, vector, keep_text, chars))
            if behind is not None:
                body["b"] = _turn_body(behind, behind_vector, keep_text, chars)
            payload = json.dumps(body, ensure_ascii=False, separators=(",", ":"))
            if len(payload.encode()) <= MAX_PAYLOAD:
                return payload
    return None


def _turn_body(
    turn: PreviousTurn, vector: np.ndarray | None, keep_text: bool, chars: int
) -> dict[str, Any]:
    text = turn.text if keep_text else ""
    body: dict[str, Any] = {
        "k": turn.category,
        "t": turn.at,
        "x": text[:chars],
        "v": _packed(vector),
        "p": round(turn.confidence, 4),
    }
    if turn.own_words is not None:  # sent even empty: an erasure then lets go of the vector
        body["w"] = (turn.own_words if keep_text else "")[:chars]
    return body


def _decoded_turn(body: dict[str, Any], dim: int) -> PreviousTurn:
    at, vector = body["t"], _vector(body.get("v"), dim)
    sure = sure_share(body.get("p"))  # a process before "p": sure
    own = body.get("w")  # a process before "w" sent no quote apart
    return PreviousTurn(
        str(body["k"]),
        None if at is None else float(at),
        str(body["x"]),
        vector,
        confidence=sure,
        own_words=None if own is None else str(own),
    )


def decode_turn(payload: str, dim: int) -> Turn:
    """A turn payload; raises ValueError (or KeyError, TypeError) for a malformed one."""
    body = json.loads(payload)
    previous = _decoded_turn(body, dim)
    if body.get("b") is not None:
        previous = replace(previous, task_behind=_decoded_turn(body["b"], dim))
    user = body["u"]
    return Turn(str(body["o"]), str(body["c"]), None if user is None else str(user), previous)


def encode_scope(
    sender: str, kind: str, conv_key: str | None, user_key: str | None, at: float
) -> str:
    """A reset (`kind` "reset") or an erasure ("drop") of a conversation, a person, or both."""
    body = {"o": sender, "e": kind, "c": conv_key, "u": user_key, "t": at}
    return json.dumps(body, ensure_ascii=False, separators=(",", ":"))


def decode_scope(payload: str) -> tuple[str, str, str | None, str | None, float]:
    """(sender, kind, conv_key, user_key, at) of a reset or erasure payload."""
    body = json.loads(payload)
    conv, user = body["c"], body["u"]
    return (
        str(body["o"]),
        str(body["e"]),
        None if conv is None else str(conv),
        None if user is None else str(user),
        float(body["t"]),
    )


HASHES_A_PAYLOAD = 100  # 64-character text hashes: 100 fit well under MAX_PAYLOAD


def encode_unpool(sender: str, hashes: set[str]) -> list[str]:
    """The text hashes of erased pool entries, in as many payloads as they need."""
    ordered = sorted(hashes)
    return [
        json.dumps({"o": sender, "h": ordered[n : n + HASHES_A_PAYLOAD]}, separators=(",", ":"))
        for n in range(0, len(ordered), HASHES_A_PAYLOAD)
    ]


def decode_unpool(payload: str) -> tuple[str, set[str]]:
    body = json.loads(payload)
    return str(body["o"]), {str(h) for h in body["h"]}
