"""The storage layer at its edges: N processes starting at once migrate once, a newer schema
refuses to start, a server that is down is one line, a password never shows, NOTIFY reaches
a listener."""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from router.config import ConfigError, DatabaseSettings
from router.store.database import open_database
from router.store.postgres import PostgresDatabase
from router.store.schema import ROUTER_MIGRATIONS
from tests.cli_helpers import run_crabbot
from tests.db_helpers import fetch_sync, open_db, open_migrated, write_sync

STARTERS = 6
SECRET = "s3cret-Pa55"
# A port nothing listens on (connection refused at once).
DOWN_URL = f"postgresql://crabbot:{SECRET}@127.0.0.1:9/crabbot"

MIGRATE = """
import asyncio, sys
from router.config import DatabaseSettings
from router.store.database import open_database
from router.store.migrations import migrate
from router.store.schema import ROUTER_MIGRATIONS

async def main():
    db = await open_database(DatabaseSettings())
    print(await migrate(db, "router", ROUTER_MIGRATIONS))
    await db.close()

asyncio.run(main())
"""
NOTIFY = """
import asyncio
from router.config import DatabaseSettings
from router.store.database import open_database

async def main():
    db = await open_database(DatabaseSettings())
    await db.notify("crabbot_test", "mode live")
    await db.close()

asyncio.run(main())
"""


def crabbot(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return run_crabbot(*args, env={**os.environ, **env})


def migrate_at_once(script: str, *args: str) -> list[tuple[str, str]]:
    """STARTERS processes running `script` at once; each must exit 0. Their (stdout, stderr)."""
    starters = [
        subprocess.Popen(
            [sys.executable, "-c", script, *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=Path(__file__).parent.parent,
        )
        for _ in range(STARTERS)
    ]
    results = [starter.communicate(timeout=120) for starter in starters]
    assert [starter.returncode for starter in starters] == [0] * STARTERS, results
    return results


@pytest.mark.postgres
def test_processes_starting_at_once_all_start_and_migrate_once(tmp_path):
    results = migrate_at_once(MIGRATE)
    versions = fetch_sync(tmp_path / "x.db", "SELECT component, version FROM schema_versions")
    assert versions == [("router", int(results[0][0]))]
    tables = fetch_sync(
        tmp_path / "x.db",
        "SELECT COUNT(*) FROM information_schema.tables WHERE table_name = 'routing_log'",
    )
    assert tables == [(1,)]


MIGRATE_FILE = MIGRATE.replace("DatabaseSettings()", "DatabaseSettings(path=sys.argv[1])")


def test_processes_starting_at_once_on_a_new_sqlite_file_migrate_once(tmp_path):
    # Each reads version 0 unless one migrates while the others wait (the file's migration
    # lock): without it the second to apply the first migration fails ("table ... already
    # exists").
    db = tmp_path / "new.db"
    results = migrate_at_once(MIGRATE_FILE, str(db))
    with sqlite3.connect(db) as conn:
        versions = conn.execute("SELECT component, version FROM schema_versions").fetchall()
    assert versions == [("router", int(results[0][0]))]


async def test_a_database_from_a_newer_crabbot_refuses_to_start_with_one_line(tmp_path):
    db = await open_migrated(tmp_path / "x.db")
    known = len(getattr(ROUTER_MIGRATIONS, db.dialect))
    await db.close()
    write_sync(tmp_path / "x.db", "UPDATE schema_versions SET version = 99")
    done = crabbot("stats", "--db", str(tmp_path / "x.db"), env={})
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert lines == [
        f"config error: database schema for router is version 99, newer than this crabbot"
        f" ({known}): upgrade crabbot"
    ]


@pytest.mark.postgres
async def test_a_notify_reaches_a_listener_in_another_process(tmp_path):
    listener = await open_db(tmp_path / "x.db")
    heard: asyncio.Queue[str] = asyncio.Queue()
    try:
        await listener.listen("crabbot_test", heard.put_nowait)
        speaker = subprocess.run(
            [sys.executable, "-c", NOTIFY],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=Path(__file__).parent.parent,
        )
        assert speaker.returncode == 0, speaker.stderr
        assert await asyncio.wait_for(heard.get(), 10) == "mode live"
    finally:
        await listener.close()


async def test_on_sqlite_a_notify_reaches_this_processs_listeners(tmp_path, monkeypatch):
    monkeypatch.delenv("CRABBOT_DATABASE_URL", raising=False)
    db = await open_db(tmp_path / "own.db")
    heard: list[str] = []
    try:
        await db.listen("crabbot_test", heard.append)
        await db.notify("crabbot_test", "mode live")
    finally:
        await db.close()
    assert heard == ["mode live"]


def test_a_server_that_is_down_is_one_line_with_the_fix_and_no_password():
    done = crabbot("stats", env={"CRABBOT_DATABASE_URL": DOWN_URL})
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr
    assert lines[0].startswith("config error: database postgresql://crabbot:***@127.0.0.1:9/")
    assert "start PostgreSQL" in lines[0]
    assert SECRET not in done.stderr + done.stdout


def test_a_password_in_the_config_file_is_refused_without_echoing_it(monkeypatch):
    monkeypatch.delenv("CRABBOT_DATABASE_URL", raising=False)
    with pytest.raises(ConfigError) as refused:
        open_database_sync(DatabaseSettings(url=DOWN_URL))
    assert "PGPASSWORD" in str(refused.value) and SECRET not in str(refused.value)


def open_database_sync(settings: DatabaseSettings) -> None:
    import asyncio

    asyncio.run(open_database(settings))


@pytest.mark.postgres
async def test_the_password_never_shows_in_a_repr_or_a_log_line(
    database_backend, caplog, monkeypatch
):
    # The throwaway server trusts local connections: the password is sent, never checked.
    with_password = database_backend.replace("://crabbot@", f"://crabbot:{SECRET}@")
    assert SECRET in with_password
    monkeypatch.setenv("CRABBOT_DATABASE_URL", with_password)
    caplog.set_level(logging.DEBUG)
    db = await open_database(DatabaseSettings())
    try:
        assert isinstance(db, PostgresDatabase)
        assert SECRET not in repr(db) and "***" in repr(db)
        with pytest.raises(Exception) as failed:
            await db.execute("SELECT * FROM no_such_table")
        assert SECRET not in str(failed.value)
    finally:
        await db.close()
    assert SECRET not in caplog.text


def test_sql_is_written_once_and_translated_for_postgresql():
    from router.store.postgres import translate

    assert translate("SELECT a FROM t WHERE b = ? AND c = '?' AND d = ?") == (
        "SELECT a FROM t WHERE b = $1 AND c = '?' AND d = $2"
    )
    assert translate("INSERT OR IGNORE INTO pool (a, b) VALUES (?, ?)") == (
        "INSERT INTO pool (a, b) VALUES ($1, $2) ON CONFLICT DO NOTHING"
    )
    assert translate("INSERT OR IGNORE INTO t (a) SELECT x FROM u WHERE y = 'it''s ?'") == (
        "INSERT INTO t (a) SELECT x FROM u WHERE y = 'it''s ?' ON CONFLICT DO NOTHING"
    )
