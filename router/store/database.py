"""The storage seam: one small async interface (`Database`) that the SQLite and the PostgreSQL
backends implement, its errors, and `open_database`, which picks the backend from the config."""

from __future__ import annotations

import os
import re
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Any, Literal, Protocol

from router.config import ConfigError

if TYPE_CHECKING:
    from router.config import DatabaseSettings

Dialect = Literal["sqlite", "postgresql"]
URL_ENV = "CRABBOT_DATABASE_URL"


class Row(Protocol):
    """A result row: read by column name or by index, iterated or unpacked as values."""

    def __getitem__(self, key: int | str, /) -> Any: ...
    def __iter__(self) -> Iterator[Any]: ...
    def __len__(self) -> int: ...
    def keys(self) -> Iterable[str]: ...


class DatabaseError(Exception):
    """The database refused a statement (a bad value, a broken constraint, bad SQL)."""


class OperationalError(DatabaseError):
    """The database could not do it now (locked, busy, restarting, unreachable): it may pass."""


class Database(ABC):
    """What every module that stores something talks to. SQL uses `?` placeholders and the
    portable subset; `sql_function` names the few expressions that differ by dialect.

    Statements outside `transaction()` commit on their own; inside it, the statements of this
    task commit or roll back together, and tasks sharing the database take turns."""

    dialect: Dialect
    # The SQLite file (None in memory and on PostgreSQL): what the file checks watch.
    file_path: str | None = None

    @abstractmethod
    async def execute(self, sql: str, parameters: Sequence[Any] = ()) -> int:
        """Run one statement; return the rows it changed."""

    @abstractmethod
    async def execute_many(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        """Run one statement for each parameter row (in one transaction when outside one)."""

    @abstractmethod
    async def fetch_all(self, sql: str, parameters: Sequence[Any] = ()) -> list[Row]:
        """Every row, read in one step."""

    async def fetch_one(self, sql: str, parameters: Sequence[Any] = ()) -> Row | None:
        """The first row, read in one step (no cursor held open across an await)."""
        return next(iter(await self.fetch_all(sql, parameters)), None)

    @abstractmethod
    def transaction(self) -> AbstractAsyncContextManager[Database]:
        """Commit the writes made inside, or roll them back when one fails; nested ones join."""

    @abstractmethod
    def migration_lock(self) -> AbstractAsyncContextManager[Database]:
        """Held while migrations run, so N processes starting at once apply them once."""

    @abstractmethod
    async def run_script(self, script: str) -> None:
        """Run several statements (a migration) in one transaction."""

    @abstractmethod
    async def writer(self) -> Database:
        """The handle the write-behind writers use: the SQLite file's own second connection
        (short busy timeout), else this one."""

    @abstractmethod
    async def listen(self, channel: str, callback: Callable[[str], None]) -> None:
        """Call `callback(payload)` for each notify on `channel` (other processes' on
        PostgreSQL; this process's on SQLite)."""

    @abstractmethod
    async def notify(self, channel: str, payload: str) -> None:
        """Tell every listener of `channel`."""

    @abstractmethod
    def sql_function(self, name: str, *arguments: str) -> str:
        """A dialect's spelling of an expression (see SQL_FUNCTIONS in each backend)."""

    @abstractmethod
    async def erase_traces(self) -> None:
        """After an erasure: make deleted text unreadable where the backend leaves traces (the
        SQLite WAL); nothing to do where it does not."""

    async def check_file(self) -> str | None:
        """Why writes cannot go to the database now: its SQLite file deleted, or a file at its
        path it cannot use (said once: logged, counted); None when they can (always on
        PostgreSQL and in memory). A crabbot database put back at the path is reopened first."""
        return None

    def check_on_reopen(self, name: str, check: Callable[[Database], Awaitable[object]]) -> None:
        """Run `check` (the migrations, the taxonomy's) on an SQLite file put back at the path
        before writing to it; one that raises keeps it unused. Nothing on PostgreSQL."""
        return None

    def count_in(self, counters: Counter[str]) -> None:
        """Count the file's losses (db_file_lost) and the writes refused meanwhile
        (db_writes_refused) in `counters`. Nothing on PostgreSQL."""
        return None

    @abstractmethod
    async def close(self) -> None: ...


_PASSWORD = re.compile(r"(://[^:/@\s]*:)[^@\s/]*@")


def scrub(text: str) -> str:
    """`text` without the password of any URL in it (an error line, a repr)."""
    return _PASSWORD.sub(r"\1***@", text)


def database_url(settings: DatabaseSettings) -> str | None:
    """The PostgreSQL URL: CRABBOT_DATABASE_URL wins over [database] url; None means SQLite.
    A password belongs in the environment (PGPASSWORD or the variable), never the config file."""
    from_env = os.environ.get(URL_ENV, "").strip()
    if from_env:
        url = from_env
    elif settings.url:
        if _PASSWORD.search(settings.url):
            raise ConfigError(
                "[database] url: remove the password; set PGPASSWORD or CRABBOT_DATABASE_URL"
            )
        url = settings.url
    else:
        return None
    if not url.startswith(("postgresql://", "postgres://")):
        raise ConfigError(f"database url {scrub(url)!r}: use postgresql://user@host:5432/name")
    return url


def describe(settings: DatabaseSettings) -> str:
    """Where the state is, for a start-up line: the URL without its password, or the file."""
    url = database_url(settings)
    return scrub(url) if url is not None else str(settings.path)


async def open_database(settings: DatabaseSettings) -> Database:
    """The configured database, open: PostgreSQL when a URL names one, else the SQLite file."""
    url = database_url(settings)
    if url is not None:
        from router.store.postgres import PostgresDatabase

        return await PostgresDatabase.open(url, settings.pool_size)
    from router.store.sqlite import SqliteDatabase

    return await SqliteDatabase.open(settings.path)
