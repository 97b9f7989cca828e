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


Calls = tuple[
    Callable[[str, tuple[Any, ...]], Awaitable[Any]],  # fetch_one
    Callable[[str], Awaitable[Any]],  # fetch_all
    Callable[[str, tuple[Any, ...]], Awaitable[Any]],  # one write, committed
    Callable[[str, list[tuple[Any, ...]]], Awaitable[Any]],  # a batch in one transaction
]


async def medians_ms(calls: list[Callable[[], Awaitable[Any]]], rounds: int) -> list[float]:
    """Each call's median, the calls taking turns sample by sample (the same machine load)."""
    samples: list[list[float]] = [[] for _ in calls]
    for _ in range(rounds):
        for call, kept in zip(calls, samples, strict=True):
            begin = time.perf_counter()
            await call()
            kept.append((time.perf_counter() - begin) * 1000)
    return [statistics.median(kept) for kept in samples]


async def shapes(sides: list[Calls]) -> list[dict[str, float]]:
    counter = iter(range(10**9))
    pull = "SELECT embedder_id, prompt_hash, text, embedding, category FROM pool"
    plans: dict[str, tuple[Callable[[Calls], Callable[[], Awaitable[Any]]], int]] = {
        "setting by key": (
            lambda c: lambda: c[0]("SELECT value FROM settings WHERE key = ?", ("k",)),
            ROUNDS * 3,
        ),
        "setting upsert (1 tx)": (lambda c: lambda: c[2](SETTING_SQL, ("k", "v", 1.0)), ROUNDS),
        "pool insert 1.5 KB": (
            lambda c: lambda: c[2](POOL_SQL, (f"p{next(counter)}", "text", EMBEDDING)),
            ROUNDS,
        ),
        "64 log rows (1 tx)": (lambda c: lambda: c[3](LOG_SQL, [LOG_ROW] * 64), ROUNDS),
        "10k pool rows": (lambda c: lambda: c[1](pull), 15),
    }
    figures: list[dict[str, float]] = [{} for _ in sides]
    for name, (make, rounds) in plans.items():
        for side, median in zip(
            figures, await medians_ms([make(c) for c in sides], rounds), strict=True
        ):
            side[name] = median
    return figures


async def fill(db: Database) -> None:
    await migrate(db, "router", ROUTER_MIGRATIONS)
    await db.execute("DELETE FROM pool")
    await db.execute_many(POOL_SQL, [(f"seed{i}", "seed text", EMBEDDING) for i in range(10_000)])
    await db.execute(SETTING_SQL, ("k", "v", 1.0))


async def direct(path: Path) -> tuple[Calls, aiosqlite.Connection]:
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

    return (fetch_one, fetch_all, write, batch), conn


def seam(db: Database) -> Calls:
    async def batch(sql: str, rows: list[tuple[Any, ...]]) -> None:
        async with db.transaction() as tx:
            await tx.execute_many(sql, rows)

    async def fetch_all(sql: str) -> Any:
        return await db.fetch_all(sql)

    return (db.fetch_one, fetch_all, db.execute, batch)


async def run(url: str | None) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "bench.db"
        db = await SqliteDatabase.open(path)
        await fill(db)
        old, conn = await direct(path)
        sides = [old, seam(db)]
        names = ["aiosqlite direct", "seam (SQLite)"]
        pg: Database | None = None
        if url:
            os.environ["CRABBOT_DATABASE_URL"] = url
            pg = await open_database(DatabaseSettings())
            await fill(pg)
            sides.append(seam(pg))
            names.append("seam (PostgreSQL)")
        await shapes(sides)  # warm-up
        columns = await shapes(sides)
        await conn.close()
        await db.close()
        if pg is not None:
            await pg.close()
    before, after = columns[0], columns[1]
    print(f"{'shape (median ms)':<24}" + "".join(f"{name:>19}" for name in names)
          + f"{'seam/direct':>13}")  # fmt: skip
    for shape in before:
        figures = "".join(f"{values[shape]:>19.3f}" for values in columns)
        print(f"{shape:<24}{figures}{after[shape] / before[shape]:>12.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", help="also time PostgreSQL at this URL (a scratch database)")
    asyncio.run(run(parser.parse_args().url))


if __name__ == "__main__":
    main()
