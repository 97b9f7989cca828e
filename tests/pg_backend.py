"""The suite on PostgreSQL: CRABBOT_TEST_DATABASE_URL names a server (scripts/pg_throwaway.py
starts one) on which each test gets a fresh database of its own, through CRABBOT_DATABASE_URL,
which the code under test and its subprocesses (the CLI, `crabbot proxy`) read.

CRABBOT_TEST_PG_REQUIRED=1 (CI's PostgreSQL run) turns a server that cannot be reached into a
failure: a test that needs PostgreSQL never skips silently there."""

from __future__ import annotations

import asyncio
import itertools
import os
import threading
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from router.config import DatabaseSettings

SERVER_URL = os.environ.get("CRABBOT_TEST_DATABASE_URL", "").strip() or None
REQUIRED = os.environ.get("CRABBOT_TEST_PG_REQUIRED") == "1"
SEED_DATABASE = "crabbot_test_seed"

# Tests about SQLite files themselves (modes, WAL, a deleted, replaced or locked file, reading
# another crabbot's file): on PostgreSQL they are skipped, by name, here and nowhere else.
SQLITE_ONLY = {
    "test_paths.py": "where the SQLite file goes",
    "test_proxy_db_file.py": "a deleted or replaced SQLite file",
    "test_database_locked.py": "another program holding SQLite's write lock",
    "test_router.py::test_prior_cache_is_bounded_and_falls_back_to_the_log": (
        "a turn gone from memory read back from the log (on PostgreSQL routing reads memory"
        " only, fed by every process: tests/test_shared_state.py)"
    ),
    "test_privacy.py::test_new_files_are_private_and_readable_ones_are_warned_about": (
        "the modes of the SQLite file, its WAL and SHM"
    ),
    "test_proxy.py::test_a_locked_database_delays_no_answer_and_loses_no_row": (
        "another program holding SQLite's write lock"
    ),
    "test_postgres.py::test_processes_starting_at_once_on_a_new_sqlite_file_migrate_once": (
        "SQLite's migration lock file"
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


class PathDatabases:
    """Stands in for router.store.database.database_url during a test on PostgreSQL: each
    SQLite path the test opens is a database of its own, as each file is on SQLite (a bot and a
    proxy "on two hosts", a fresh pool beside the seeded one). The first path takes the URL in
    CRABBOT_DATABASE_URL, which the test's subprocesses use too; a URL a test sets itself (a
    password, a server that is down) is used as it is."""

    def __init__(self, first_url: str, real: Callable[[DatabaseSettings], str | None]) -> None:
        self.real = real
        self.ours = {first_url}
        self.by_path: dict[str, str] = {}

    def assign(self, path: Path, url: str) -> None:
        self.ours.add(url)
        self.by_path[str(path.resolve())] = url

    def __call__(self, settings: DatabaseSettings) -> str | None:
        current = os.environ.get("CRABBOT_DATABASE_URL")
        if current not in self.ours:
            return self.real(settings)
        if str(settings.path) == ":memory:":
            return self._new()
        key = str(settings.path.expanduser().resolve())
        if key not in self.by_path:
            taken = current in self.by_path.values()
            self.by_path[key] = self._new() if taken else current
        return self.by_path[key]

    def _new(self) -> str:
        url = create()
        self.ours.add(url)
        return url

    def drop_all(self) -> None:
        for url in self.ours:
            drop(url)


def copy_seeded(template: Path, target: Path) -> Path:
    """A seeded database at `target` beside the test's own (two hosts, each with the seeded
    pool): a copy of the seeded file on SQLite, a clone of the seeded database on PostgreSQL."""
    import shutil

    from router.store import database

    if SERVER_URL is None:
        shutil.copy(template, target)  # with its mode, 0600
        return target
    paths = database.database_url
    assert isinstance(paths, PathDatabases)
    paths.assign(target, create(template=SEED_DATABASE))
    return target
