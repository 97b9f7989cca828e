"""The SQLite backend (aiosqlite): one connection shared by every task of a process, WAL, a busy
timeout, secure_delete, files readable by their owner only. Its reads and transactions never
interleave: reads are taken in one step and transactions take turns."""

from __future__ import annotations

import asyncio
import sqlite3
from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Any, NoReturn

import aiosqlite

from router.store.database import Database, DatabaseError, OperationalError, Row
from router.store.sqlite_files import (
    check_database_path,
    create_private,
    database_files,
    warn_if_readable,
)

BUSY_TIMEOUT_S = 10.0
WRITER_BUSY_TIMEOUT_S = 0.5  # the write-behind retries itself rather than block for long
SQL_FUNCTIONS = {
    "utc_day": "strftime('%Y-%m-%d', {0}, 'unixepoch')",
    "unindexed": "+{0}",  # a column the planner must not pick an index for
}


def _raise(exc: sqlite3.Error) -> NoReturn:
    """sqlite3's errors as the seam's: OperationalError (locked, busy, I/O) may pass."""
    kind = OperationalError if isinstance(exc, sqlite3.OperationalError) else DatabaseError
    raise kind(str(exc)) from exc


class SqliteDatabase(Database):
    dialect = "sqlite"

    def __init__(self, conn: aiosqlite.Connection, file_path: str | None) -> None:
        self._conn = conn
        self.file_path = file_path
        self._turn = asyncio.Lock()
        self._in_transaction: ContextVar[bool] = ContextVar(f"sqlite-tx-{id(self)}", default=False)
        self._listeners: defaultdict[str, list[Callable[[str], None]]] = defaultdict(list)

    def __repr__(self) -> str:
        return f"SqliteDatabase({self.file_path or ':memory:'})"

    @classmethod
    async def open(cls, path: Path | str) -> SqliteDatabase:
        """Open (creating the folder and the file readable by their owner only, and warning
        about existing ones others can read) with WAL, a busy timeout and Row results."""
        memory = str(path) == ":memory:"
        if not memory:
            check_database_path(Path(path))
            create_private(Path(path))
            warn_if_readable(*database_files(Path(path)))
        conn = await cls._connect(str(path), BUSY_TIMEOUT_S)
        try:
            await conn.execute("PRAGMA journal_mode=WAL")
            await conn.execute("PRAGMA foreign_keys=ON")
            # Erased and expired text is overwritten in the file, not left in its free pages.
            await conn.execute("PRAGMA secure_delete=ON")
        except sqlite3.Error as exc:
            await conn.close()
            _raise(exc)
        return cls(conn, None if memory else str(path))

    @classmethod
    async def open_read_only(cls, path: Path) -> SqliteDatabase:
        """Another crabbot's file, read only (`crabbot pool import`)."""
        try:
            conn = await aiosqlite.connect(f"file:{path.resolve()}?mode=ro", uri=True)
        except sqlite3.Error as exc:
            _raise(exc)
        conn.row_factory = aiosqlite.Row
        return cls(conn, str(path))

    @staticmethod
    async def _connect(path: str, timeout: float) -> aiosqlite.Connection:
        try:
            conn = await aiosqlite.connect(path, timeout=timeout)
            conn.row_factory = aiosqlite.Row
            await conn.execute("PRAGMA synchronous=NORMAL")
        except sqlite3.Error as exc:
            _raise(exc)
        return conn

    async def execute(self, sql: str, parameters: Sequence[Any] = ()) -> int:
        if self._in_transaction.get():
            try:
                cursor = await self._conn.execute(sql, parameters)
            except sqlite3.Error as exc:
                _raise(exc)
            return max(cursor.rowcount, 0)
        # One statement in a transaction of its own, without transaction()'s generator: this is
        # most writes, and the seam must cost SQLite nothing measurable (scripts/bench_db_seam.py).
        async with self._turn:
            try:
                cursor = await self._conn.execute(sql, parameters)
                await self._conn.commit()
            except BaseException as exc:
                await self._conn.rollback()
                if isinstance(exc, sqlite3.Error):
                    _raise(exc)
                raise
        return max(cursor.rowcount, 0)

    async def execute_many(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        if not self._in_transaction.get():
            async with self.transaction():
                return await self.execute_many(sql, rows)
        try:
            await self._conn.executemany(sql, rows)
        except sqlite3.Error as exc:
            _raise(exc)

    async def fetch_all(self, sql: str, parameters: Sequence[Any] = ()) -> list[Row]:
        # In one step: a cursor left open across an await keeps a read snapshot on the shared
        # connection, and a write another task makes on it then fails at once with 'database
        # is locked' (SQLite skips the busy timeout when a reader upgrades to a writer).
        try:
            return list(await self._conn.execute_fetchall(sql, parameters))
        except sqlite3.Error as exc:
            _raise(exc)

    async def fetch_one(self, sql: str, parameters: Sequence[Any] = ()) -> Row | None:
        try:
            return next(iter(await self._conn.execute_fetchall(sql, parameters)), None)
        except sqlite3.Error as exc:
            _raise(exc)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Database]:
        # A failed write must not leave its transaction open and hold the write lock (the
        # routing log's writer waits on it); tasks sharing the connection take turns, so none
        # commits or rolls back another's writes.
        if self._in_transaction.get():
            yield self
            return
        async with self._turn:
            token = self._in_transaction.set(True)
            try:
                yield self
            except BaseException:
                await self._conn.rollback()
                raise
            else:
                try:
                    await self._conn.commit()
                except sqlite3.Error as exc:
                    await self._conn.rollback()
                    _raise(exc)
            finally:
                self._in_transaction.reset(token)

    @asynccontextmanager
    async def migration_lock(self) -> AsyncIterator[Database]:
        yield self  # each migration's BEGIN ... COMMIT holds SQLite's own write lock

    async def run_script(self, script: str) -> None:
        async with self._turn:
            try:
                await self._conn.executescript(f"BEGIN;\n{script}\nCOMMIT;")
            except sqlite3.Error as exc:
                await self._conn.rollback()
                _raise(exc)

    async def writer(self) -> Database:
        if self.file_path is None:
            return self  # in memory: one connection only, shared with the writers
        return SqliteDatabase(
            await self._connect(self.file_path, WRITER_BUSY_TIMEOUT_S), self.file_path
        )

    async def listen(self, channel: str, callback: Callable[[str], None]) -> None:
        self._listeners[channel].append(callback)

    async def notify(self, channel: str, payload: str) -> None:
        for callback in list(self._listeners[channel]):
            callback(payload)

    def sql_function(self, name: str, *arguments: str) -> str:
        return SQL_FUNCTIONS[name].format(*arguments)

    async def erase_traces(self) -> None:
        """Copy the WAL into the database and empty it, so erased text leaves the WAL file too
        (as far as no other connection's open read holds older pages)."""
        await self.fetch_all("PRAGMA wal_checkpoint(TRUNCATE)")

    async def table_columns(self, table: str) -> set[str]:
        """The columns of `table` in this file (another crabbot's may be older)."""
        return {str(row["name"]) for row in await self.fetch_all(f"PRAGMA table_info({table})")}

    async def close(self) -> None:
        await self._conn.close()
