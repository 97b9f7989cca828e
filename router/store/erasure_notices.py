"""Erasure notices: each erasure leaves one (when, and whose; never a word or a hash of what
went) for a day, so that every process on the database lets go of its copies too."""

from __future__ import annotations

from dataclasses import dataclass

from router.store.database import Database

NOTICE_KEEP_S = 24 * 3600.0


@dataclass(frozen=True)
class Notice:
    id: int
    at: float
    conv_key: str | None
    user_key: str | None


async def leave_notice(
    conn: Database, conv_key: str | None, user_key: str | None, at: float
) -> int:
    """Record an erasure of a conversation, a person or both at `at` (inside the erasure's
    transaction) and clear the notices past NOTICE_KEEP_S; return the new notice's id."""
    await clear_old_notices(conn, at)
    row = await conn.fetch_one(
        "INSERT INTO erasure_notices (at, conv_key, user_key) VALUES (?, ?, ?) RETURNING id",
        (at, conv_key, user_key),
    )
    assert row is not None
    return int(row[0])


async def clear_old_notices(conn: Database, now: float) -> int:
    """Remove the notices past NOTICE_KEEP_S (retention; a new erasure also does)."""
    return await conn.execute("DELETE FROM erasure_notices WHERE at < ?", (now - NOTICE_KEEP_S,))


async def latest_notice(conn: Database) -> int:
    """The id of the newest notice (0: none)."""
    row = await conn.fetch_one("SELECT MAX(id) FROM erasure_notices")
    return int(row[0]) if row and row[0] is not None else 0


async def notices_after(conn: Database, after_id: int) -> list[Notice]:
    """The notices newer than `after_id`, oldest first."""
    rows = await conn.fetch_all(
        "SELECT id, at, conv_key, user_key FROM erasure_notices WHERE id > ? ORDER BY id",
        (after_id,),
    )
    return [Notice(int(row[0]), float(row[1]), row[2], row[3]) for row in rows]
