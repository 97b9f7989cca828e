"""The local classifier as last fitted, kept in the database so a restart on an unchanged pool
loads it (milliseconds) instead of fitting it again (about a second)."""

from __future__ import annotations

import hashlib
import io
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from router.signals.calibration import Calibration
from router.signals.classifier import LocalClassifier
from router.store.database import Database

STATE_NAME = "local_classifier"
STATE_VERSION = "2"  # bump when what LocalClassifier fits changes


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


async def load(
    conn: Database, fingerprint_: str, categories: tuple[str, ...]
) -> LocalClassifier | None:
    row = await conn.fetch_one(
        "SELECT state FROM fitted_state WHERE name = ? AND fingerprint = ?",
        (STATE_NAME, fingerprint_),
    )
    if row is None:
        return None
    with np.load(io.BytesIO(row[0])) as arrays:
        return LocalClassifier.from_state(categories, {name: arrays[name] for name in arrays})


async def save(conn: Database, fingerprint_: str, classifier: LocalClassifier) -> None:
    buffer = io.BytesIO()
    arrays: dict[str, Any] = classifier.state()  # typed loosely: numpy's stub takes a name
    np.savez_compressed(buffer, **arrays)  # that could be allow_pickle for a keyword
    async with conn.transaction():
        await conn.execute(
            "INSERT INTO fitted_state (name, fingerprint, state, at) VALUES (?, ?, ?, ?)"
            " ON CONFLICT(name) DO UPDATE SET fingerprint = excluded.fingerprint,"
            " state = excluded.state, at = excluded.at",
            (STATE_NAME, fingerprint_, buffer.getvalue(), time.time()),
        )
