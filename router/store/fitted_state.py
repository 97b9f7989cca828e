"""The pool's fitted state (the local classifier, and a large pool's search index) as last made,
kept in the database as npz bytes under a fingerprint of what it was made from, so a restart or
another process on the same pool loads it (milliseconds) instead of fitting again (seconds)."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence

import aiosqlite

from router.signals.calibration import Calibration
from router.store.database import fetch_one, transaction

STATE_NAME = "local_classifier"
STATE_VERSION = "2"  # bump when what LocalClassifier fits changes


def fingerprint(
    embedder_id: str,
    texts: Sequence[str],
    labels: Sequence[str],
    categories: Sequence[str],
    calibration: Calibration,
) -> str:
    """What the fit depends on: the embedder, every pooled text and label, the categories and
    the calibration."""
    digest = hashlib.sha256()
    for part in (STATE_VERSION, embedder_id, "|".join(categories), repr(calibration)):
        digest.update(part.encode() + b"\0")
    for text, label in zip(texts, labels, strict=True):
        digest.update(text.encode() + b"\0" + label.encode() + b"\0")
    return digest.hexdigest()


async def load(conn: aiosqlite.Connection, fingerprint_: str) -> bytes | None:
    """The stored state's bytes when it was made under this fingerprint."""
    row = await fetch_one(
        conn,
        "SELECT state FROM fitted_state WHERE name = ? AND fingerprint = ?",
        (STATE_NAME, fingerprint_),
    )
    return None if row is None else bytes(row[0])


async def save(conn: aiosqlite.Connection, fingerprint_: str, state: bytes) -> None:
    async with transaction(conn):
        await conn.execute(
            "INSERT INTO fitted_state (name, fingerprint, state, at) VALUES (?, ?, ?, ?)"
            " ON CONFLICT(name) DO UPDATE SET fingerprint = excluded.fingerprint,"
            " state = excluded.state, at = excluded.at",
            (STATE_NAME, fingerprint_, state, time.time()),
        )
