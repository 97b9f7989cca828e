"""A database file deleted or replaced under a running proxy: /healthz says so (503), the error is
logged and counted, and the routing log's rows wait in memory, not in the lost file, until the
file is back."""

from __future__ import annotations

import logging
import os
import sqlite3

import httpx

from tests.proxy_helpers import CLIENT_KEY, GREETING, running_proxy, user

AUTH = {"Authorization": f"Bearer {CLIENT_KEY}"}


def _prompts(path: os.PathLike[str]) -> list[str]:
    with sqlite3.connect(path) as conn:
        return [row[0] for row in conn.execute("SELECT prompt FROM routing_log ORDER BY id")]


async def test_a_deleted_database_file_is_noticed_and_its_rows_wait_until_it_is_back(
    tmp_path, provider, caplog
):
    db, kept = tmp_path / "family.db", tmp_path / "kept.db"
    async with (
        running_proxy(db, None, provider.base_url) as proxy,
        httpx.AsyncClient(headers=AUTH) as http,
    ):

        async def ask(text: str) -> int:
            body = {"model": "cheap", "messages": user(text)}
            return (await http.post(proxy.url + "/chat/completions", json=body)).status_code

        async def health() -> tuple[int, str]:
            answer = await http.get(proxy.url.removesuffix("/v1") + "/healthz")
            return answer.status_code, answer.json()["status"]

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
        sqlite3.connect(other).close()
        os.replace(other, db)
        health = await http.get(proxy.url.removesuffix("/v1") + "/healthz")
        assert not await proxy.router.log.writer.flush()
    assert health.status_code == 503
    assert health.json() == {"status": "unhealthy", "error": "the database file was replaced"}
    assert proxy.router.counters["db_file_lost"] == 1
    assert proxy.router.counters["log_rows_dropped"] == 1  # at the stop: counted, not silent
