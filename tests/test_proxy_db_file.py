"""A database file deleted or replaced under a running proxy or bot: /healthz says so (503), the
error is logged and counted, the write-behind's rows wait in memory and the router's own writes
are refused, none into the lost file, until it is back: the same file, or a backup copy put back
at its path, reopened without a restart."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import sqlite3
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx
import pytest

from router.store.database import OperationalError
from router.store.migrations import migrate
from router.store.schema import ROUTER_MIGRATIONS
from router.store.settings import get_setting, set_setting
from router.store.sqlite import SqliteDatabase
from tests.bot_helpers import open_learning_core
from tests.fakes.groq_server import category_reply
from tests.proxy_helpers import CLIENT_KEY, GREETING, RunningProxy, running_proxy, user
from tests.test_bot_agent import MOM

AUTH = {"Authorization": f"Bearer {CLIENT_KEY}"}


CHAT = (
    "the cat sat on my laptop all morning",
    "grandma's tomatoes won a prize at the fair",
    "our train was two hours late, we played cards",
    "Tom lost his first tooth at breakfast",
)


def _query(path: os.PathLike[str], sql: str) -> list[tuple[object, ...]]:
    with contextlib.closing(sqlite3.connect(path)) as conn:
        return [tuple(row) for row in conn.execute(sql)]


def _prompts(path: os.PathLike[str]) -> list[str]:
    return [str(row[0]) for row in _query(path, "SELECT prompt FROM routing_log ORDER BY id")]


def _asking(
    proxy: RunningProxy, http: httpx.AsyncClient, model: str
) -> tuple[Callable[[str], Awaitable[int]], Callable[[], Awaitable[tuple[int, str]]]]:
    """ask(text) -> the status of a chat request for `model`; health() -> /healthz's."""

    async def ask(text: str) -> int:
        body = {"model": model, "messages": user(text)}
        return (await http.post(proxy.url + "/chat/completions", json=body)).status_code

    async def health() -> tuple[int, str]:
        answer = await http.get(proxy.url.removesuffix("/v1") + "/healthz")
        return answer.status_code, answer.json()["status"]

    return ask, health


def _back_up_and_remove(db: Path, backup: Path) -> None:
    """The operator's backup copy, then the database and its -wal and -shm removed."""
    with (
        contextlib.closing(sqlite3.connect(db)) as conn,
        contextlib.closing(sqlite3.connect(backup)) as copy,
    ):
        conn.backup(copy)
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)


async def test_a_deleted_database_file_is_noticed_and_its_rows_wait_until_it_is_back(
    tmp_path, provider, caplog
):
    db, kept = tmp_path / "family.db", tmp_path / "kept.db"
    async with (
        running_proxy(db, None, provider.base_url) as proxy,
        httpx.AsyncClient(headers=AUTH) as http,
    ):
        ask, health = _asking(proxy, http, "cheap")

        writer = proxy.router.log.writer
        assert await ask(f"{GREETING} before") == 200
        assert await writer.flush()
        os.link(db, kept)  # the operator's copy of the same file (same inode)
        os.unlink(db)
        with caplog.at_level(logging.ERROR):
            assert await health() == (503, "unhealthy")
            answers = [await ask(f"{GREETING} while gone {n}") for n in range(3)]
            assert not await writer.flush()  # nothing goes into the deleted file
            waiting = writer.depth
            assert await health() == (503, "unhealthy")
        lost = proxy.router.counters["db_file_lost"]
        os.link(kept, db)  # back
        assert await health() == (200, "ok")
        assert await writer.flush()
        metrics = (await http.get(proxy.url.removesuffix("/v1") + "/metrics")).text
    assert answers == [200, 200, 200]
    assert waiting == 3 and lost == 1
    assert "crabbot_router_db_file_lost_total 1.0" in metrics
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "deleted" in errors[0]
    assert _prompts(db) == [f"{GREETING} before", *(f"{GREETING} while gone {n}" for n in range(3))]


async def test_a_replaced_database_file_is_noticed(tmp_path, provider):
    db, other = tmp_path / "family.db", tmp_path / "other.db"
    async with (
        running_proxy(db, None, provider.base_url) as proxy,
        httpx.AsyncClient(headers=AUTH) as http,
    ):
        body = {"model": "cheap", "messages": user(GREETING)}
        assert (await http.post(proxy.url + "/chat/completions", json=body)).status_code == 200
        with contextlib.closing(sqlite3.connect(other)) as conn:
            conn.execute("CREATE TABLE notes (text TEXT)")  # another program's database
        os.replace(other, db)
        health = await http.get(proxy.url.removesuffix("/v1") + "/healthz")
        assert not await proxy.router.log.writer.flush()
    assert health.status_code == 503
    assert health.json() == {
        "status": "unhealthy",
        "error": "the database file was replaced by an SQLite database that is not crabbot's",
    }
    assert proxy.router.counters["db_file_lost"] == 1
    assert proxy.router.counters["log_rows_dropped"] == 1  # at the stop: counted, not silent


async def test_a_backup_copy_put_back_is_reopened_and_gets_everything_that_waited(
    seeded_db, embedder, provider, groq_server, tmp_path, caplog
):
    groq_server.respond = lambda _r: category_reply("casual", 0.97)
    db, backup = seeded_db, tmp_path / "backup.db"
    sections = {
        "categorizer": {"enabled": True, "base_url": groq_server.base_url},
        "routing": {"mode": "shadow"},
    }
    async with (
        running_proxy(
            db, embedder, provider.base_url, sections=sections, groq_api_key="test-key"
        ) as proxy,
        httpx.AsyncClient(headers=AUTH) as http,
    ):
        router = proxy.router
        ask, health = _asking(proxy, http, "auto")

        assert await ask(f"{GREETING} before") == 200
        assert await router.log.flush() and await router.pool_writer.flush()
        # The hourly retention pass (its first 5 s after start) would be one more refused
        # write if a loaded machine brought it into the window: not what this test counts.
        await router.retention.close()
        _back_up_and_remove(db, backup)
        with caplog.at_level(logging.WARNING):
            health_gone = await health()
            answers = [await ask(f"gone: {text}") for text in CHAT[:2]]
            with pytest.raises(OperationalError, match="deleted"):
                await router.stored_mode.set("live")  # not into the deleted file: refused
            assert not await router.log.flush(timeout_s=0)
            waiting = router.log.writer.depth
            shutil.copyfile(backup, db)
            health_back = await health()
            answers += [await ask(f"back: {text}") for text in CHAT[2:]]
            await router.stored_mode.set("live")
            assert await router.log.flush() and await router.pool_writer.flush()
    assert (health_gone, health_back) == ((503, "unhealthy"), (200, "ok"))
    assert answers == [200] * 4 and waiting == 2
    assert _prompts(db)[-4:] == [f"gone: {t}" for t in CHAT[:2]] + [f"back: {t}" for t in CHAT[2:]]
    learned = _query(
        db,
        "SELECT text FROM pool WHERE text LIKE 'gone: %' OR text LIKE 'back: %'"
        " UNION ALL SELECT text FROM pool_quarantine",
    )
    assert len(learned) == 4  # in the pool, or waiting in quarantine for review
    assert _query(db, "SELECT value FROM settings WHERE key = 'routing_mode'") == [("live",)]
    counters = router.counters
    assert (counters["db_file_lost"], counters["db_writes_refused"]) == (1, 1)
    assert counters["log_rows_dropped"] == counters["pool_rows_dropped"] == 0
    said = [r.getMessage() for r in caplog.records if r.name == "router.store.sqlite_watch"]
    assert len(said) == 2 and "was deleted" in said[0] and "reopened" in said[1]


async def test_the_bot_writes_its_memory_into_a_copy_put_back(
    seeded_db, embedder, upstream, groq_server, tmp_path
):
    groq_server.respond = lambda _r: category_reply("coding", 0.97)
    core = await open_learning_core(seeded_db, embedder, upstream.base_url, groq_server.base_url)
    try:
        _back_up_and_remove(seeded_db, tmp_path / "backup.db")
        question = "Could you sketch a small bash script that renames every photo by its date?"
        reply = await core.agent.handle("telegram:5", MOM, question)
        assert reply.ok
        assert not await core.memory.flush(timeout_s=0)  # waits: the file is gone
        shutil.copyfile(tmp_path / "backup.db", seeded_db)
        assert await core.memory.flush() and await core.router.pool_writer.flush()
        assert await core.router.log.flush()
    finally:
        await core.close()
    messages = _query(seeded_db, "SELECT content FROM messages WHERE conv_key = 'telegram:5'")
    assert messages[0] == (question,) and len(messages) == 2
    assert _query(seeded_db, "SELECT COUNT(*) FROM pool WHERE origin = 'telegram:5'") == [(1,)]
    assert question in _prompts(seeded_db)
    assert core.counters["memory_rows_dropped"] == 0


async def test_a_copy_put_back_beside_the_lost_files_wal_is_read_as_it_is(tmp_path, caplog):
    """`rm crabbot.db` leaves its -wal: the copy put back is read as itself, not with the lost
    file's pages over it, and what is written then lands in it."""
    path, backup = tmp_path / "crabbot.db", tmp_path / "backup.db"
    db = await SqliteDatabase.open(path)
    try:
        await migrate(db, "router", ROUTER_MIGRATIONS)
        await set_setting(db, "note", "in the backup")
        with (
            contextlib.closing(sqlite3.connect(path)) as conn,
            contextlib.closing(sqlite3.connect(backup)) as copy,
        ):
            conn.backup(copy)
        await set_setting(db, "note", "after the backup")  # in the -wal, not checkpointed
        path.unlink()
        assert Path(f"{path}-wal").exists()
        with pytest.raises(OperationalError, match="deleted"):
            await set_setting(db, "note", "while gone")
        shutil.copyfile(backup, path)
        with caplog.at_level(logging.WARNING):
            assert await db.check_file() is None
        assert await get_setting(db, "note") == "in the backup"
        await set_setting(db, "after", "reopened")
    finally:
        await db.close()
    assert _query(path, "PRAGMA integrity_check") == [("ok",)]
    assert _query(path, "SELECT key, value FROM settings WHERE key IN ('note', 'after')") == [
        ("after", "reopened"),
        ("note", "in the backup"),
    ]
    assert any("removed" in r.getMessage() and "-wal" in r.getMessage() for r in caplog.records)
