"""SQLite through the storage seam (router.store.sqlite) against aiosqlite called directly the
way crabbot did before the seam, on the same file and shapes: medians and the ratio, side by side
in one run. With --url, the same shapes on PostgreSQL through the seam too."""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiosqlite

from router.config import DatabaseSettings
from router.store.database import Database, open_database
from router.store.migrations import migrate
from router.store.schema import ROUTER_MIGRATIONS
from router.store.sqlite import SqliteDatabase

LOG_SQL = (
    "INSERT INTO routing_log (at, conv_key, prompt_hash, prompt, mode, category, tier,"
    " tier_mapping_version, confidence, source, model, latency_ms, outcome)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
LOG_ROW = (1.5, "telegram:1", "h", "hello", "live", "casual", "cheap", "v2", 0.9, "knn", "m", 3.2,
           "ok")  # fmt: skip
POOL_SQL = (
    "INSERT OR IGNORE INTO pool (prompt_hash, text, embedding, embedder_id, category,"
    " label_source, added_at) VALUES (?, ?, ?, 'e', 'casual', 'seed', 0)"
)
SETTING_SQL = (
    "INSERT INTO settings (key, value, updated_at) VALUES (?, ?, ?) ON CONFLICT(key)"
    " DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at"
)
EMBEDDING = os.urandom(1536)
ROUNDS = 300


async def median_ms(call: Callable[[], Awaitable[Any]], rounds: int) -> float:
    samples = []
    for _ in range(rounds):
        begin = time.perf_counter()
        await call()
        samples.append((time.perf_counter() - begin) * 1000)
    return statistics.median(samples)


async def shapes(
    fetch_one: Callable[[str, tuple[Any, ...]], Awaitable[Any]],
    fetch_all: Callable[[str], Awaitable[Any]],
    write: Callable[[str, tuple[Any, ...]], Awaitable[Any]],
    batch: Callable[[str, list[tuple[Any, ...]]], Awaitable[Any]],
) -> dict[str, float]:
    counter = iter(range(10**9))
    return {
        "setting by key": await median_ms(
            lambda: fetch_one("SELECT value FROM settings WHERE key = ?", ("k",)), ROUNDS * 3
        ),
        "setting upsert (1 tx)": await median_ms(
            lambda: write(SETTING_SQL, ("k", "v", 1.0)), ROUNDS
        ),
        "pool insert 1.5 KB": await median_ms(
            lambda: write(POOL_SQL, (f"p{next(counter)}", "text", EMBEDDING)), ROUNDS
        ),
        "64 log rows (1 tx)": await median_ms(lambda: batch(LOG_SQL, [LOG_ROW] * 64), ROUNDS),
        "10k pool rows": await median_ms(
            lambda: fetch_all(
                "SELECT embedder_id, prompt_hash, text, embedding, category FROM pool"
            ),
            15,
        ),
    }


async def fill(db: Database) -> None:
    await migrate(db, "router", ROUTER_MIGRATIONS)
    await db.execute("DELETE FROM pool")
    await db.execute_many(POOL_SQL, [(f"seed{i}", "seed text", EMBEDDING) for i in range(10_000)])
    await db.execute(SETTING_SQL, ("k", "v", 1.0))


async def direct(path: Path) -> dict[str, float]:
    """Before the seam: one aiosqlite connection, reads in one step, writes under a lock."""
    conn = await aiosqlite.connect(str(path), timeout=10.0)
    conn.row_factory = aiosqlite.Row
    for pragma in ("journal_mode=WAL", "synchronous=NORMAL", "foreign_keys=ON", "secure_delete=ON"):
        await conn.execute(f"PRAGMA {pragma}")
    lock = asyncio.Lock()

    async def fetch_one(sql: str, parameters: tuple[Any, ...]) -> Any:
        return next(iter(await conn.execute_fetchall(sql, parameters)), None)

    async def fetch_all(sql: str) -> Any:
        return await conn.execute_fetchall(sql)

    async def write(sql: str, parameters: tuple[Any, ...]) -> None:
        async with lock:
            try:
                await conn.execute(sql, parameters)
            except BaseException:
                await conn.rollback()
                raise
            await conn.commit()

    async def batch(sql: str, rows: list[tuple[Any, ...]]) -> None:
        try:
            await conn.executemany(sql, rows)
            await conn.commit()
        except BaseException:
            await conn.rollback()
            raise

    try:
        return await shapes(fetch_one, fetch_all, write, batch)
    finally:
        await conn.close()


async def seam(db: Database) -> dict[str, float]:
    async def batch(sql: str, rows: list[tuple[Any, ...]]) -> None:
        async with db.transaction() as tx:
            await tx.execute_many(sql, rows)

    async def fetch_all(sql: str) -> Any:
        return await db.fetch_all(sql)

    return await shapes(db.fetch_one, fetch_all, db.execute, batch)


async def run(url: str | None) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "bench.db"
        db = await SqliteDatabase.open(path)
        await fill(db)
        after = await seam(db)
        await db.close()
        before = await direct(path)
    columns = [("aiosqlite direct", before), ("seam (SQLite)", after)]
    if url:
        os.environ["CRABBOT_DATABASE_URL"] = url
        pg = await open_database(DatabaseSettings())
        await fill(pg)
        columns.append(("seam (PostgreSQL)", await seam(pg)))
        await pg.close()
    print(f"{'shape (median ms)':<24}" + "".join(f"{name:>19}" for name, _ in columns)
          + f"{'seam/direct':>13}")  # fmt: skip
    for shape in before:
        figures = "".join(f"{values[shape]:>19.3f}" for _, values in columns)
        print(f"{shape:<24}{figures}{after[shape] / before[shape]:>12.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", help="also time PostgreSQL at this URL (a scratch database)")
    asyncio.run(run(parser.parse_args().url))


if __name__ == "__main__":
    main()
