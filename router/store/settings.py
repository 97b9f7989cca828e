"""The settings table: small named values shared by every process on the database (the routing
mode, the local classifier's calibration)."""

from __future__ import annotations

import time

import aiosqlite

from router.store.database import fetch_one, transaction


async def get_setting(conn: aiosqlite.Connection, key: str) -> str | None:
    row = await fetch_one(conn, "SELECT value FROM settings WHERE key = ?", (key,))
    return str(row[0]) if row else None


async def set_setting(conn: aiosqlite.Connection, key: str, value: str) -> None:
    async with transaction(conn):
        await conn.execute(
            "INSERT INTO settings (key, value, updated_at) VALUES (?, ?, ?)"
            " ON CONFLICT(key) DO UPDATE SET value = excluded.value,"
            " updated_at = excluded.updated_at",
            (key, value, time.time()),
        )
