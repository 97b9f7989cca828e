"""The suite on PostgreSQL: CRABBOT_TEST_DATABASE_URL names a server (scripts/pg_throwaway.py
starts one) on which each test gets a fresh database of its own, through CRABBOT_DATABASE_URL,
which the code under test and its subprocesses (the CLI, `crabbot proxy`) read.

CRABBOT_TEST_PG_REQUIRED=1 (CI's PostgreSQL run) turns a server that cannot be reached into a
failure: a test that needs PostgreSQL never skips silently there."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import threading
from collections.abc import Iterator
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

SERVER_URL = os.environ.get("CRABBOT_TEST_DATABASE_URL", "").strip() or None
REQUIRED = os.environ.get("CRABBOT_TEST_PG_REQUIRED") == "1"
SEED_DATABASE = "crabbot_test_seed"

# Tests about SQLite files themselves (modes, WAL, a deleted, replaced or locked file, reading
# another crabbot's file): on PostgreSQL they are skipped, by name, here and nowhere else.
SQLITE_ONLY = {
    "test_paths.py": "where the SQLite file goes",
    "test_proxy_db_file.py": "a deleted or replaced SQLite file",
    "test_database_locked.py": "another program holding SQLite's write lock",
    "test_privacy.py::test_new_files_are_private_and_readable_ones_are_warned_about": (
        "the modes of the SQLite file, its WAL and SHM"
    ),
    "test_proxy.py::test_a_locked_database_delays_no_answer_and_loses_no_row": (
        "another program holding SQLite's write lock"
    ),
    "test_pool_tools.py::test_check_compat_passes_on_the_same_embedder_and_fails_on_another": (
        "copies the seeded SQLite file as the other crabbot's"
    ),
}

_names = itertools.count()


def url_for(database: str) -> str:
    """The server's URL with another database name."""
    assert SERVER_URL is not None
    parts = urlsplit(SERVER_URL)
    return urlunsplit(parts._replace(path=f"/{database}"))


class _Admin:
    """One connection to the server, on a loop in a thread of its own, for the many CREATE and
    DROP DATABASE statements of a run (a connection each cost ~60 ms)."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self.loop.run_forever, daemon=True).start()
        self.conn: asyncpg.Connection | None = None

    async def _execute(self, statement: str) -> None:
        assert SERVER_URL is not None
        if self.conn is None or self.conn.is_closed():
            self.conn = await asyncpg.connect(SERVER_URL, timeout=10)
        await self.conn.execute(statement)

    def execute(self, *statements: str) -> None:
        for statement in statements:
            asyncio.run_coroutine_threadsafe(self._execute(statement), self.loop).result(60)


_admins: list[_Admin] = []  # made on first use: a run on SQLite starts no thread


def _admin_execute(*statements: str) -> None:
    if not _admins:
        _admins.append(_Admin())
    _admins[0].execute(*statements)


def reachable() -> str | None:
    """None when the server answers; else why not."""
    try:
        _admin_execute("SELECT 1")
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


def create(template: str | None = None) -> str:
    """A new database (a copy of `template`, else empty); return its URL."""
    name = f"crabbot_test_{os.getpid()}_{next(_names)}"
    # FILE_COPY: a small database copied whole, 30 ms against WAL_LOG's 140 (fsync is off).
    source = template or "template0"
    _admin_execute(f"CREATE DATABASE {name} TEMPLATE {source} STRATEGY FILE_COPY")
    return url_for(name)


def drop(url: str) -> None:
    name = urlsplit(url).path.lstrip("/")
    _admin_execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def recreate_seed() -> str:
    _admin_execute(
        f"DROP DATABASE IF EXISTS {SEED_DATABASE} WITH (FORCE)",
        f"CREATE DATABASE {SEED_DATABASE} TEMPLATE template0 STRATEGY FILE_COPY",
    )
    return url_for(SEED_DATABASE)


@contextlib.contextmanager
def another_database(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """For a test that opens a second, empty database beside the seeded one: on PostgreSQL a
    database of its own for the block (on SQLite its own file path does that already)."""
    if SERVER_URL is None:
        yield
        return
    before = os.environ.get("CRABBOT_DATABASE_URL")
    url = create()
    monkeypatch.setenv("CRABBOT_DATABASE_URL", url)
    try:
        yield
    finally:
        if before is not None:
            monkeypatch.setenv("CRABBOT_DATABASE_URL", before)
        drop(url)
