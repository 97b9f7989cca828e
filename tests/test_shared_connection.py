"""One SQLite connection shared by every conversation of a process, beside the routing log's
writer on a connection of its own: no write fails or is undone because of another task."""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest

from bot.config import MemorySettings
from bot.memory import Memory
from router.store.log_writer import LogWriter
from tests.db_helpers import open_db

TURNS = 150
INSERT = "INSERT INTO notes (text) VALUES (?)"


async def test_memory_keeps_every_exchange_while_the_log_writer_commits_all_the_time(tmp_path):
    path = tmp_path / "crabbot.db"
    conn = await open_db(path)
    await conn.execute("CREATE TABLE notes (text TEXT NOT NULL)")
    memory = await Memory.open(conn, MemorySettings(max_turns=TURNS, max_tokens=100_000))
    counters: Counter[str] = Counter()
    # One row a batch, no wait: the writer takes the write lock as often as it can.
    writer = await LogWriter(INSERT, counters, flush_ms=0, batch_rows=1).start(conn)
    done = asyncio.Event()

    async def log_all_the_time() -> None:
        n = 0
        while not done.is_set():
            writer.put((f"row {n}",))
            n += 1
            await writer.flush(10.0)

    async def conversation(conv: int) -> None:
        for turn in range(TURNS):
            await memory.history(f"c{conv}")  # a read between writes, as the agent does
            await memory.add_exchange(f"c{conv}", None, f"q{conv}.{turn}", f"a{conv}.{turn}")

    logging_task = asyncio.create_task(log_all_the_time())
    try:
        await asyncio.gather(*(conversation(conv) for conv in range(8)))
        for conv in range(8):
            questions = [t.content for t in await memory.history(f"c{conv}") if t.role == "user"]
            assert questions == [f"q{conv}.{turn}" for turn in range(TURNS)]
    finally:
        done.set()
        await logging_task
        await writer.close()
        await conn.close()
    assert counters["log_rows_dropped"] == 0


async def test_a_failed_write_never_undoes_another_tasks_write(tmp_path):
    conn = await open_db(tmp_path / "crabbot.db")
    await conn.execute("CREATE TABLE notes (text TEXT NOT NULL)")
    first_wrote = asyncio.Event()
    second_tried = asyncio.Event()

    async def keeps_its_write() -> None:
        async with conn.transaction():
            await conn.execute(INSERT, ("kept",))
            first_wrote.set()
            # While this transaction is open, another task's write fails and rolls back: on
            # SQLite's one shared connection it waits for its turn; on PostgreSQL it runs beside
            # this one, on a pooled connection of its own.
            if conn.dialect == "sqlite":
                with pytest.raises(TimeoutError):
                    await asyncio.wait_for(second_tried.wait(), 0.2)
            else:
                await second_tried.wait()

    async def fails() -> None:
        await first_wrote.wait()
        with pytest.raises(ValueError):
            async with conn.transaction():
                second_tried.set()
                await conn.execute(INSERT, ("lost",))
                raise ValueError("a write that goes wrong")

    try:
        await asyncio.gather(keeps_its_write(), fails())
        rows = await conn.fetch_all("SELECT text FROM notes")
        assert [row[0] for row in rows] == ["kept"]
    finally:
        await conn.close()
