"""The record of the shipped seed entries each embedder's pool has ever been given, and the mark
of the last seed file (under the taxonomy) whose every entry is in that record, so a start with
nothing new reads one setting instead of the record."""

from __future__ import annotations

from typing import Any

from router.store.database import Database
from router.store.settings import SET_SQL, get_setting

RECORD_SQL = "INSERT OR IGNORE INTO seed_given (embedder_id, text_hash) VALUES (?, ?)"

Statement = tuple[str, list[tuple[Any, ...]]]


def _mark_key(embedder_id: str) -> str:
    return f"seed_given:{embedder_id}"


async def given(conn: Database, embedder_id: str) -> set[str]:
    """The text hashes of the seed entries this embedder's pool has been given."""
    rows = await conn.fetch_all(
        "SELECT text_hash FROM seed_given WHERE embedder_id = ?", (embedder_id,)
    )
    return {str(row[0]) for row in rows}


async def mark(conn: Database, embedder_id: str) -> str | None:
    """The mark stored when this embedder's pool was last given a whole seed file."""
    return await get_setting(conn, _mark_key(embedder_id))


def record(embedder_id: str, hashes: list[str], new_mark: str, at: float) -> list[Statement]:
    """The statements that record `hashes` as given and store the mark; run them in the
    transaction that adds the pool's rows. Conflict-tolerant: processes starting at once may
    both record the same entries."""
    return [
        (RECORD_SQL, [(embedder_id, digest) for digest in hashes]),
        (SET_SQL, [(_mark_key(embedder_id), new_mark, at)]),
    ]
