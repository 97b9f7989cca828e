"""The tests' way into the database, on whichever backend the suite runs (SQLite files, or the
PostgreSQL database conftest gives each test when CRABBOT_TEST_DATABASE_URL is set)."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

from router.config import DatabaseSettings
from router.store.database import Database, open_database
from router.store.migrations import migrate
from router.store.schema import ROUTER_MIGRATIONS


async def open_db(path: Path | str) -> Database:
    """The test's database: the SQLite file at `path`, or this test's PostgreSQL database."""
    return await open_database(DatabaseSettings(path=Path(path)))


async def open_migrated(path: Path | str) -> Database:
    db = await open_db(path)
    await migrate(db, "router", ROUTER_MIGRATIONS)
    return db


async def fetch(
    path: Path | str, sql: str, parameters: tuple[Any, ...] = ()
) -> list[tuple[Any, ...]]:
    """Rows as tuples, read on a connection of their own."""
    db = await open_db(path)
    try:
        return [tuple(row) for row in await db.fetch_all(sql, parameters)]
    finally:
        await db.close()


async def fetch_dicts(
    path: Path | str, sql: str, parameters: tuple[Any, ...] = ()
) -> list[dict[str, Any]]:
    db = await open_db(path)
    try:
        return [dict(row) for row in await db.fetch_all(sql, parameters)]
    finally:
        await db.close()


async def write(path: Path | str, sql: str, parameters: tuple[Any, ...] = ()) -> int:
    db = await open_db(path)
    try:
        return await db.execute(sql, parameters)
    finally:
        await db.close()


def run_sync(coro: Any) -> Any:
    """Run `coro` to its end from sync code, also while an event loop runs in this thread."""
    result: list[Any] = []
    errors: list[BaseException] = []

    def target() -> None:
        try:
            result.append(asyncio.run(coro))
        except BaseException as exc:  # handed to the caller
            errors.append(exc)

    thread = threading.Thread(target=target)
    thread.start()
    thread.join()
    if errors:
        raise errors[0]
    return result[0]


def fetch_sync(
    path: Path | str, sql: str, parameters: tuple[Any, ...] = ()
) -> list[tuple[Any, ...]]:
    return run_sync(fetch(path, sql, parameters))


def write_sync(path: Path | str, sql: str, parameters: tuple[Any, ...] = ()) -> int:
    return run_sync(write(path, sql, parameters))


class _Result:
    def __init__(self, rows: list[tuple[Any, ...]]) -> None:
        self.rows = rows

    def fetchall(self) -> list[tuple[Any, ...]]:
        return self.rows

    def fetchone(self) -> tuple[Any, ...] | None:
        return self.rows[0] if self.rows else None

    def __iter__(self) -> Any:
        return iter(self.rows)


class SyncConnection:
    """A few lines of sqlite3's API over the seam, for sync tests that read or poke the test's
    database on either backend: each statement on its own connection, committed at once."""

    def __init__(self, path: Path | str) -> None:
        self.path = path

    def __enter__(self) -> SyncConnection:
        return self

    def __exit__(self, *_: object) -> None:
        return None

    def execute(self, sql: str, parameters: tuple[Any, ...] = ()) -> _Result:
        async def run() -> list[tuple[Any, ...]]:
            db = await open_db(self.path)
            try:
                if sql.lstrip().upper().startswith("SELECT"):
                    return [tuple(row) for row in await db.fetch_all(sql, parameters)]
                await db.execute(sql, parameters)
                return []
            finally:
                await db.close()

        return _Result(run_sync(run()))

    def executemany(self, sql: str, rows: list[tuple[Any, ...]]) -> None:
        async def run() -> None:
            db = await open_db(self.path)
            try:
                await db.execute_many(sql, rows)
            finally:
                await db.close()

        run_sync(run())


def sync_connect(path: Path | str) -> SyncConnection:
    return SyncConnection(path)
