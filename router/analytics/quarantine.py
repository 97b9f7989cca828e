"""The pool's quarantine and origins, for the operator: list the labels held back by the learning
gate (router/pool/learning.py), accept them into the pool or reject them, and purge everything
one origin taught."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

from router.store.database import Database


@dataclass(frozen=True)
class Held:
    """One quarantined label."""

    id: int
    at: float
    origin: str
    text: str
    category: str
    confidence: float | None
    local_category: str | None
    local_confidence: float | None
    reason: str


def _which(ids: Sequence[int] | None, origin: str | None) -> tuple[str, tuple[object, ...]]:
    """A WHERE clause: the given ids (None: every row), of one origin or any."""
    parts: list[str] = []
    params: list[object] = []
    if ids is not None:
        parts.append(f"id IN ({', '.join('?' * len(ids)) or 'NULL'})")
        params.extend(ids)
    if origin is not None:
        parts.append("origin = ?")
        params.append(origin)
    return (" WHERE " + " AND ".join(parts) if parts else ""), tuple(params)


async def held(conn: Database, origin: str | None = None, limit: int | None = None) -> list[Held]:
    """Quarantined labels, oldest first."""
    where, params = _which(None, origin)
    sql = (
        "SELECT id, at, origin, text, category, confidence, local_category, local_confidence,"
        f" reason FROM pool_quarantine{where} ORDER BY id"
    )
    if limit is not None:
        sql += f" LIMIT {int(limit)}"
    return [Held(*row) for row in await conn.fetch_all(sql, params)]


async def held_by_origin(conn: Database) -> dict[str, int]:
    rows = await conn.fetch_all(
        "SELECT origin, COUNT(*) FROM pool_quarantine GROUP BY origin ORDER BY 2 DESC"
    )
    return {str(origin): int(n) for origin, n in rows}


async def accept(conn: Database, ids: Sequence[int] | None, origin: str | None = None) -> int:
    """Move quarantined labels into the pool (label source `reviewed`, origin kept); return how
    many entered (a text already pooled is not added twice). A running router sees them at its
    next start."""
    where, params = _which(ids, origin)
    async with conn.transaction():
        added = await conn.execute(
            "INSERT OR IGNORE INTO pool (prompt_hash, text, embedding, embedder_id, category,"
            " label_source, confidence, added_at, origin, conv_key, user_key)"
            " SELECT prompt_hash, text, embedding, embedder_id, category, 'reviewed', confidence,"
            f" ?, origin, conv_key, user_key FROM pool_quarantine{where} ORDER BY id",
            (time.time(), *params),
        )
        await conn.execute(f"DELETE FROM pool_quarantine{where}", params)
    return added


async def reject(conn: Database, ids: Sequence[int] | None, origin: str | None = None) -> int:
    """Drop quarantined labels; return how many."""
    where, params = _which(ids, origin)
    async with conn.transaction():
        rejected = await conn.execute(f"DELETE FROM pool_quarantine{where}", params)
    return rejected


async def origin_counts(conn: Database, origin: str) -> tuple[int, int]:
    """(pool entries, quarantined labels) that `origin` taught."""
    pooled = await conn.fetch_all("SELECT COUNT(*) FROM pool WHERE origin = ?", (origin,))
    waiting = await conn.fetch_all(
        "SELECT COUNT(*) FROM pool_quarantine WHERE origin = ?", (origin,)
    )
    return int(next(iter(pooled))[0]), int(next(iter(waiting))[0])


async def purge(conn: Database, origin: str) -> tuple[int, int]:
    """Remove everything `origin` taught, pooled and quarantined; return both counts."""
    async with conn.transaction():
        pooled = await conn.execute("DELETE FROM pool WHERE origin = ?", (origin,))
        waiting = await conn.execute("DELETE FROM pool_quarantine WHERE origin = ?", (origin,))
    return pooled, waiting


async def top_origins(conn: Database, limit: int = 10) -> list[tuple[str, int]]:
    """The origins that taught the most pool entries."""
    rows = await conn.fetch_all(
        "SELECT origin, COUNT(*) FROM pool WHERE origin IS NOT NULL GROUP BY origin"
        f" ORDER BY 2 DESC LIMIT {int(limit)}"
    )
    return [(str(origin), int(n)) for origin, n in rows]
