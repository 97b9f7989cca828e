"""The routing log written behind the answers survives a hard kill of `crabbot proxy`: the rows
already committed stay, the last batch (answered, not yet committed) is written from the spool
at the next start, once each, a request held open across the kill is marked interrupted (one
another running process holds open is not), and the database opens clean again."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from openai import AsyncOpenAI

from router.store.log_writer import FLUSH_MS
from tests.db_helpers import fetch_sync, sync_connect
from tests.fakes.openai_api import FakeOpenAI
from tests.proxy_helpers import proxy_process

COMMIT_DEADLINE_S = 30.0  # generous for a loaded CI machine; the writer commits every FLUSH_MS


def _config(tmp_path: Path, provider: FakeOpenAI) -> Path:
    path = tmp_path / "crabbot.toml"
    path.write_text(
        f'[database]\npath = "{tmp_path / "kill.db"}"\n'
        "[local]\nenabled = false\n[categorizer]\nenabled = false\n"
        f'[proxy]\nport = 0\nbase_url = "{provider.base_url}"\nmax_retries = 0\n',
        encoding="utf-8",
    )
    return path


@asynccontextmanager
async def _running_proxy(config: Path) -> AsyncIterator[tuple[asyncio.subprocess.Process, str]]:
    """The proxy process and its base URL (killed on the way out if it still runs)."""
    async with proxy_process(config) as (process, line):
        yield process, line.split()[3]


def _rows(db: Path) -> list[tuple[str, str]]:
    return fetch_sync(db, "SELECT prompt, outcome FROM routing_log ORDER BY id")


async def _committed(db: Path, count: int) -> float:
    """Seconds until `count` rows are visible to another process. The proxy's commit happens in
    another process, so it cannot be awaited: read the file until it shows them."""
    started = time.monotonic()
    while len(_rows(db)) < count:
        assert time.monotonic() - started < COMMIT_DEADLINE_S, f"rows: {len(_rows(db))}/{count}"
        await asyncio.sleep(FLUSH_MS / 4000)
    return time.monotonic() - started


async def test_a_hard_kill_loses_no_answered_row_of_the_routing_log(tmp_path, provider):
    config = _config(tmp_path, provider)
    db = tmp_path / "kill.db"
    async with (
        _running_proxy(config) as (process, url),
        AsyncOpenAI(base_url=url, api_key="unused", max_retries=0) as client,
    ):
        for n in range(10):
            messages = [{"role": "user", "content": f"before {n}"}]
            await client.chat.completions.create(model="cheap", messages=messages)
        # Written with no shutdown to flush them: the batch timer alone commits them.
        await _committed(db, 10)
        # A stream the provider holds after its first piece: a second on, its row is
        # written open (no outcome yet).
        provider.stall_after = 1
        held = await client.chat.completions.create(
            model="cheap", messages=[{"role": "user", "content": "held open"}], stream=True
        )
        assert (await anext(aiter(held))).choices[0].delta.role == "assistant"
        await _committed(db, 11)
        provider.stall_after = None
        for n in range(5):
            messages = [{"role": "user", "content": f"after {n}"}]
            await client.chat.completions.create(model="strong", messages=messages)
        # Killed right after the last answer, within its batch's FLUSH_MS, the stream still
        # held open.
        process.send_signal(signal.SIGKILL)
        assert await process.wait() == -signal.SIGKILL

    if "CRABBOT_DATABASE_URL" not in os.environ:  # an SQLite file: whole after the kill
        assert fetch_sync(db, "PRAGMA integrity_check") == [("ok",)]
    rows = _rows(db)
    assert rows[:10] == [(f"before {n}", "completed") for n in range(10)]
    assert rows[10] == ("held open", None)
    # The kill's last batch waits in the spool: never an earlier row lost, or a partial one.
    assert rows[11:] == [(f"after {n}", "completed") for n in range(len(rows) - 11)]
    with sync_connect(db) as conn:
        # A request another process (this one, still running) holds open on the same file.
        conn.execute(
            "INSERT INTO routing_log (decision_id, at, prompt_hash, prompt, mode, tier,"
            " tier_mapping_version, source, model, latency_ms, open_pid)"
            " VALUES ('held-elsewhere', ?, 'h', 'held elsewhere', 'live', 'cheap', 'v1',"
            " 'alias', 'm', 1.0, ?)",
            (time.time(), os.getpid()),
        )

    # A new proxy opens the same file and logs on.
    async with _running_proxy(config) as (process, url):
        async with AsyncOpenAI(base_url=url, api_key="unused", max_retries=0) as client:
            messages = [{"role": "user", "content": "after the restart"}]
            await client.chat.completions.create(model="cheap", messages=messages)
        process.send_signal(signal.SIGINT)  # Ctrl-C: a graceful stop writes what is queued
        assert await asyncio.wait_for(process.wait(), 60) == 130  # the shell convention for ^C
    rows = _rows(db)
    assert rows[-1] == ("after the restart", "completed")
    # Every answer has its row, once: the killed process's last batch was written at the start.
    after = [row for row in rows if row[0].startswith("after ") and row[0] != "after the restart"]
    assert after == [(f"after {n}", "completed") for n in range(5)]
    # The request open at the kill is not left without an outcome; the one a running process
    # holds open is left to it.
    assert rows[10] == ("held open", "interrupted")
    assert ("held elsewhere", None) in rows


async def test_sigterm_stops_the_proxy_gracefully_with_every_row_written(tmp_path, provider):
    """What `docker stop` and systemd send: the answers of the last moments are written before
    the process exits, and the exit code says SIGTERM (143)."""
    config = _config(tmp_path, provider)
    async with _running_proxy(config) as (process, url):
        async with AsyncOpenAI(base_url=url, api_key="unused", max_retries=0) as client:
            for n in range(5):
                messages = [{"role": "user", "content": f"last {n}"}]
                await client.chat.completions.create(model="cheap", messages=messages)
        # At once: the rows still wait for their batch (FLUSH_MS) when the signal arrives.
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), 60) == 128 + signal.SIGTERM
    assert _rows(tmp_path / "kill.db") == [(f"last {n}", "completed") for n in range(5)]
