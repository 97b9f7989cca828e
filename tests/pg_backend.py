"""The suite on PostgreSQL: CRABBOT_TEST_DATABASE_URL names a server (scripts/pg_throwaway.py
starts one) on which each test gets a fresh database of its own, through CRABBOT_DATABASE_URL,
which the code under test and its subprocesses (the CLI, `crabbot proxy`) read.

CRABBOT_TEST_PG_REQUIRED=1 (CI's PostgreSQL run) turns a server that cannot be reached into a
failure: a test that needs PostgreSQL never skips silently there."""

from __future__ import annotations

import itertools
import os
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from tests.db_helpers import run_sync

SERVER_URL = os.environ.get("CRABBOT_TEST_DATABASE_URL", "").strip() or None
REQUIRED = os.environ.get("CRABBOT_TEST_PG_REQUIRED") == "1"
SEED_DATABASE = "crabbot_test_seed"

# Tests about SQLite files themselves (modes, WAL, a deleted, replaced or locked file, reading
# another crabbot's file): on PostgreSQL they are skipped, by name, here and nowhere else.
SQLITE_ONLY = {
    "test_paths.py": "where the SQLite file goes",
    "test_proxy_db_file.py": "a deleted or replaced SQLite file",
    "test_database_locked.py": "another program holding SQLite's write lock",
    "test_log_kill.py": "a killed writer and SQLite's integrity check",
    "test_privacy.py::test_database_files_are_private": "file modes",
    "test_privacy.py::test_an_existing_readable_database_is_warned_about": "file modes",
    "test_proxy.py::test_a_locked_database_delays_no_answer": "SQLite's write lock",
    "test_router.py::test_prior_cache_is_bounded_and_falls_back_to_the_log": (
        "a turn gone from memory read back from the log (on PostgreSQL routing reads memory"
        " only, fed by every process: tests/test_shared_state.py)"
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


async def _admin(*statements: str) -> None:
    assert SERVER_URL is not None
    conn = await asyncpg.connect(SERVER_URL, timeout=10)
    try:
        for statement in statements:
            await conn.execute(statement)
    finally:
        await conn.close()


def reachable() -> str | None:
    """None when the server answers; else why not."""
    try:
        run_sync(_admin("SELECT 1"))
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


def create(template: str | None = None) -> str:
    """A new database (a copy of `template`, else empty); return its URL."""
    name = f"crabbot_test_{os.getpid()}_{next(_names)}"
    source = f" TEMPLATE {template}" if template else " TEMPLATE template0"
    run_sync(_admin(f"CREATE DATABASE {name}{source}"))
    return url_for(name)


def drop(url: str) -> None:
    name = urlsplit(url).path.lstrip("/")
    run_sync(_admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))


def recreate_seed() -> str:
    run_sync(_admin(f"DROP DATABASE IF EXISTS {SEED_DATABASE} WITH (FORCE)"))
    run_sync(_admin(f"CREATE DATABASE {SEED_DATABASE} TEMPLATE template0"))
    return url_for(SEED_DATABASE)
