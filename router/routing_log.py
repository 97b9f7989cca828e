"""The routing log: one row a decision (the category is the truth, the tier derived), and the
small key-value settings table that holds the routing mode."""

from __future__ import annotations

import time

import aiosqlite

from router.decision import RoutingDecision
from router.pool import text_hash
from router.signals.continuity import PreviousTurn


async def write_decision(
    conn: aiosqlite.Connection,
    decision: RoutingDecision,
    text: str,
    conv_key: str | None,
    at: float,
) -> int:
    llm, knn = decision.llm, decision.knn
    cursor = await conn.execute(
        "INSERT INTO routing_log (at, conv_key, prompt_hash, prompt, mode, category, tier,"
        " tier_mapping_version, confidence, source, model, llm_category, llm_confidence,"
        " llm_latency_ms, knn_category, knn_tier, knn_confidence, knn_latency_ms,"
        " prior_category, latency_ms, error)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            at,
            conv_key,
            text_hash(text),
            text,
            decision.mode,
            decision.category,
            decision.tier,
            decision.tier_mapping_version,
            decision.confidence,
            decision.source,
            decision.model,
            llm.category if llm else None,
            llm.confidence if llm else None,
            llm.latency_ms if llm else None,
            knn.category if knn else None,
            knn.tier if knn else None,
            knn.confidence if knn else None,
            knn.latency_ms if knn else None,
            decision.prior_category,
            decision.latency_ms,
            decision.error,
        ),
    )
    await conn.commit()
    return int(cursor.lastrowid or 0)


async def record_usage(
    conn: aiosqlite.Connection, log_id: int, prompt_tokens: int, completion_tokens: int
) -> None:
    await conn.execute(
        "UPDATE routing_log SET prompt_tokens = ?, completion_tokens = ? WHERE id = ?",
        (prompt_tokens, completion_tokens, log_id),
    )
    await conn.commit()


async def record_error(conn: aiosqlite.Connection, log_id: int, error: str) -> None:
    await conn.execute(
        "UPDATE routing_log SET error = COALESCE(error || '; ', '') || ? WHERE id = ?",
        (error, log_id),
    )
    await conn.commit()


async def last_turn(conn: aiosqlite.Connection, conv_key: str) -> PreviousTurn | None:
    """The conversation's last categorized decision since its last /reset: its context after a
    restart."""
    async with conn.execute(
        "SELECT category, at, prompt FROM routing_log WHERE conv_key = ? AND category IS NOT NULL"
        " AND at > COALESCE((SELECT at FROM context_resets WHERE conv_key = ?), 0)"
        " ORDER BY id DESC LIMIT 1",
        (conv_key, conv_key),
    ) as cursor:
        row = await cursor.fetchone()
    return PreviousTurn(row["category"], row["at"], row["prompt"]) if row else None


async def reset_context(conn: aiosqlite.Connection, conv_key: str, at: float) -> None:
    await conn.execute(
        "INSERT INTO context_resets (conv_key, at) VALUES (?, ?)"
        " ON CONFLICT(conv_key) DO UPDATE SET at = excluded.at",
        (conv_key, at),
    )
    await conn.commit()


async def get_setting(conn: aiosqlite.Connection, key: str) -> str | None:
    async with conn.execute("SELECT value FROM settings WHERE key = ?", (key,)) as cursor:
        row = await cursor.fetchone()
    return str(row[0]) if row else None


async def set_setting(conn: aiosqlite.Connection, key: str, value: str) -> None:
    await conn.execute(
        "INSERT INTO settings (key, value, updated_at) VALUES (?, ?, ?)"
        " ON CONFLICT(key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
        (key, value, time.time()),
    )
    await conn.commit()
