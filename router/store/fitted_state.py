"""The pool's fitted state (the local classifier, and a large pool's search index) as last made,
kept in the database as npz bytes under a fingerprint of what it was made from, so a restart or
another process on the same pool loads it (milliseconds) instead of fitting again (seconds)."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence

from router.signals.calibration import Calibration
from router.store.database import Database

STATE_NAME = "local_classifier"
STATE_VERSION = "4"  # bump when what LocalClassifier fits changes


def fingerprint(
    embedder_id: str,
    texts: Sequence[str],
    labels: Sequence[str],
    categories: Sequence[str],
    calibration: Calibration,
) -> str:
    """What the fit depends on: the embedder, every pooled text and label (in any order: two
    processes that learned the same labels in another order share one fit), the categories
    and the calibration."""
    digest = hashlib.sha256()
    for part in (STATE_VERSION, embedder_id, "|".join(categories), repr(calibration)):
        digest.update(part.encode() + b"\0")
    for entry in sorted(f"{t}\0{label}\0" for t, label in zip(texts, labels, strict=True)):
        digest.update(entry.encode())
    return digest.hexdigest()


async def load(conn: Database, fingerprint_: str) -> bytes | None:
    """The stored state's bytes when it was made under this fingerprint."""
    row = await conn.fetch_one(
        "SELECT state FROM fitted_state WHERE name = ? AND fingerprint = ?",
        (STATE_NAME, fingerprint_),
    )
    return None if row is None else bytes(row[0])


async def save(conn: Database, fingerprint_: str, state: bytes) -> None:
    async with conn.transaction():
        await conn.execute(
            "INSERT INTO fitted_state (name, fingerprint, state, at) VALUES (?, ?, ?, ?)"
            " ON CONFLICT(name) DO UPDATE SET fingerprint = excluded.fingerprint,"
            " state = excluded.state, at = excluded.at",
            (STATE_NAME, fingerprint_, state, time.time()),
        )
