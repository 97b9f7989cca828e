"""The SQLite backend (aiosqlite): one connection shared by every task of a process, WAL, a busy
timeout, secure_delete, files readable by their owner only. Its reads and transactions never
interleave: reads are taken in one step and transactions take turns. Before each write it checks
(one os.stat) that the file at its path is the one it opened: none there, writes are refused; a
crabbot database put back there (a copy), it reopens on it (see FileWatch)."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Any, NoReturn

import aiosqlite

from router.config import ConfigError
from router.store.database import Database, DatabaseError, OperationalError, Row
from router.store.sqlite_files import (
    check_database_path,
    create_private,
    database_files,
    migration_file_lock,
    put_back_problem,
    warn_if_readable,
)
from router.store.sqlite_watch import Check, FileId, FileWatch, file_id, file_state

BUSY_TIMEOUT_S = 10.0
WRITER_BUSY_TIMEOUT_S = 0.5  # the write-behind retries itself rather than block for long
# Every connection's (the main one's and the write-behind writers'): per connection in SQLite.
CONNECTION_PRAGMAS = (
    "PRAGMA foreign_keys=ON",
    # Erased and expired text is overwritten in the file, not left in its free pages (the
    # writers delete too: memory trimmed to its last turns, /reset).
    "PRAGMA secure_delete=ON",
)
MAIN_PRAGMAS = ("PRAGMA journal_mode=WAL", *CONNECTION_PRAGMAS)
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

    def __init__(
        self,
        conn: aiosqlite.Connection,
        file_path: str | None,
        watch: FileWatch | None = None,
        timeout: float = BUSY_TIMEOUT_S,
        pragmas: tuple[str, ...] = (),
    ) -> None:
        self._conn = conn
        self.file_path = file_path
        # The file checked before each write (None: in memory, or read only), and how this
        # connection was opened, to open it again on a file put back.
        self._watch = watch
        self._file: FileId | None = file_id(watch.path) if watch is not None else None
        self._generation = watch.generation if watch is not None else 0
        self._timeout, self._pragmas = timeout, pragmas
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
        if memory:
            return cls(await cls._connect(str(path), BUSY_TIMEOUT_S, MAIN_PRAGMAS), None)
        # Processes opening one new file at once take turns: a switch to WAL while another
        # connection makes the same switch can fail at once with 'database is locked'.
        async with migration_file_lock(Path(path)):
            conn = await cls._connect(str(path), BUSY_TIMEOUT_S, MAIN_PRAGMAS)
            await cls._first_read(conn)
        return cls(conn, str(path), FileWatch(str(path)), BUSY_TIMEOUT_S, MAIN_PRAGMAS)

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
    async def _connect(path: str, timeout: float, pragmas: tuple[str, ...]) -> aiosqlite.Connection:
        try:
            conn = await aiosqlite.connect(path, timeout=timeout)
        except sqlite3.Error as exc:
            _raise(exc)
        conn.row_factory = aiosqlite.Row
        try:
            for pragma in ("PRAGMA synchronous=NORMAL", *pragmas):
                await conn.execute(pragma)
        except sqlite3.Error as exc:
            await conn.close()
            _raise(exc)
        return conn

    @staticmethod
    async def _first_read(conn: aiosqlite.Connection) -> None:
        """A read, so SQLite opens the file's -wal and -shm (see FileWatch.opened)."""
        try:
            await conn.execute_fetchall("SELECT COUNT(*) FROM sqlite_master")
        except sqlite3.Error as exc:
            await conn.close()
            _raise(exc)

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
            if self._moved():
                await self._writable()
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
        if self._watch is not None and self._watch.generation != self._generation:
            await self.check_file()  # another connection moved to a file put back: follow
        try:
            return list(await self._conn.execute_fetchall(sql, parameters))
        except sqlite3.Error as exc:
            _raise(exc)

    async def fetch_one(self, sql: str, parameters: Sequence[Any] = ()) -> Row | None:
        if self._watch is not None and self._watch.generation != self._generation:
            await self.check_file()  # another connection moved to a file put back: follow
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
            if self._moved():
                await self._writable()
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
        if self.file_path is None:  # in memory: this connection is the only one
            yield self
            return
        async with migration_file_lock(Path(self.file_path)):
            yield self

    async def run_script(self, script: str) -> None:
        async with self._turn:
            if self._moved():
                await self._writable()
            try:
                await self._conn.executescript(f"BEGIN;\n{script}\nCOMMIT;")
            except sqlite3.Error as exc:
                await self._conn.rollback()
                _raise(exc)

    async def writer(self) -> Database:
        if self.file_path is None:
            return self  # in memory: one connection only, shared with the writers
        conn = await self._connect(self.file_path, WRITER_BUSY_TIMEOUT_S, CONNECTION_PRAGMAS)
        return SqliteDatabase(
            conn, self.file_path, self._watch, WRITER_BUSY_TIMEOUT_S, CONNECTION_PRAGMAS
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

    # -- the file under a running process ------------------------------------------------------

    def check_on_reopen(self, name: str, check: Check) -> None:
        if self._watch is not None:
            self._watch.checks[name] = check

    def count_in(self, counters: Counter[str]) -> None:
        if self._watch is not None:
            self._watch.count_in(counters)

    def _moved(self) -> bool:
        """Whether the file at the path may not be the one written (one os.stat)."""
        watch = self._watch
        return watch is not None and (watch.lost is not None or file_id(watch.path) != self._file)

    async def check_file(self) -> str | None:
        if not self._moved():
            return None
        if self._in_transaction.get():  # this task holds the turn: the next write checks
            return self._watch.lost if self._watch is not None else None
        async with self._turn:
            return await self._follow()

    async def _writable(self) -> None:
        """Before a write, the turn held, when _moved(): on the file at the path, or refused
        (counted)."""
        lost = await self._follow()
        if lost is not None:
            assert self._watch is not None
            self._watch.refused()
            raise OperationalError(f"the database file {self.file_path} was {lost}: not written")

    async def _follow(self) -> str | None:
        """The turn held: None once this connection is on the file at the path (the same one
        again, or a crabbot database put back there, reopened); else what is wrong, said once."""
        watch = self._watch
        assert watch is not None
        found = file_id(watch.path)
        if found == self._file:
            watch.back()
            return None
        if found is None:
            return watch.report("deleted")
        async with watch.lock:
            if found != watch.adopted:
                problem = await self._usable(found)
                if problem is not None:
                    return watch.report(problem)
                watch.adopt(found)
        try:
            conn = await self._connect(watch.path, self._timeout, self._pragmas)
            await self._first_read(conn)
        except DatabaseError as exc:
            return watch.report(f"replaced by a file SQLite cannot open ({exc})")
        watch.opened()
        old, self._conn = self._conn, conn
        self._file, self._generation = found, watch.generation
        # On a file no longer at its path SQLite neither checkpoints nor deletes the -wal file.
        with contextlib.suppress(sqlite3.Error, ValueError):
            await old.close()
        return None

    async def _usable(self, found: FileId) -> str | None:
        """None when the file put back at the path is a crabbot database this crabbot can use
        (its migrations and checks run on it); else why not (remembered until it changes)."""
        watch = self._watch
        assert watch is not None
        state = file_state(watch.path)
        if state is None or state[:2] != found:
            return "replaced while it was checked"
        if state in watch.verdicts:
            return watch.verdicts[state]
        problem = put_back_problem(Path(watch.path))
        if problem is None:
            watch.clear_stale_sidecars()
            problem = await self._check_put_back(watch)
        if problem is not None:
            watch.verdicts[state] = problem
        return problem

    async def _check_put_back(self, watch: FileWatch) -> str | None:
        try:
            conn = await self._connect(watch.path, BUSY_TIMEOUT_S, ())
        except DatabaseError as exc:
            return f"replaced by a file SQLite cannot open ({exc})"
        check = SqliteDatabase(conn, None)
        try:
            if not await check.fetch_all(
                "SELECT 1 FROM sqlite_master WHERE name = 'schema_versions'"
            ):
                return "replaced by an SQLite database that is not crabbot's"  # left untouched
            for pragma in MAIN_PRAGMAS:
                await check.fetch_all(pragma)
            for run in watch.checks.values():
                await run(check)
        except (DatabaseError, ConfigError) as exc:
            return f"replaced by a database this crabbot cannot use ({exc})"
        finally:
            await check.close()
        return None
