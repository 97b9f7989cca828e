"""Nothing waits on the database (issue 24, 4): with another program holding SQLite's write lock,
a reply with the categorizer teaching the pool is not delayed, and its memory exchange and pool
addition are written once the lock is let go (the real bundled model, a fake Groq, a fake
upstream through the openai SDK)."""

from __future__ import annotations

import sqlite3

from tests.bot_helpers import open_learning_core
from tests.fakes.groq_server import category_reply
from tests.test_bot_agent import MOM

QUESTION = "Could you sketch a small bash script that renames every photo by its date?"


async def test_a_locked_database_delays_no_reply_and_loses_nothing(
    seeded_db, embedder, upstream, groq_server
):
    groq_server.respond = lambda _r: category_reply("coding", 0.97)
    core = await open_learning_core(seeded_db, embedder, upstream.base_url, groq_server.base_url)
    other = sqlite3.connect(seeded_db, timeout=0, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")  # another program holds the write lock
        other.execute("UPDATE settings SET updated_at = updated_at")
        reply = await core.agent.handle("telegram:5", MOM, QUESTION)
        # Answered while the lock is still held: nothing on the reply's path waited for it.
        assert reply.ok and reply.decision is not None and reply.decision.source == "llm"
        assert groq_server.requests, "the categorizer was asked"
        # The exchange is remembered already (read from what waits to be written)...
        history = await core.memory.history("telegram:5")
        assert [t.content for t in history][0] == QUESTION
        assert core.router.pool is not None and core.router.pool.contains_text(QUESTION)
        assert not await core.memory.writer.flush(timeout_s=0)
        other.execute("ROLLBACK")  # ... and written once the lock is let go.
        assert await core.memory.flush() and await core.router.pool_writer.flush()
        rows = core.router.conn
        messages = await rows.fetch_all(
            "SELECT content FROM messages WHERE conv_key = 'telegram:5' ORDER BY id"
        )
        assert [row[0] for row in messages][0] == QUESTION
        pooled = await rows.fetch_all(
            "SELECT category, origin FROM pool WHERE text = ?", (QUESTION,)
        )
        assert [tuple(row) for row in pooled] == [("coding", "telegram:5")]
        assert core.counters["memory_rows_dropped"] == 0
        assert core.router.counters["pool_rows_dropped"] == 0
    finally:
        other.close()
        await core.close()
