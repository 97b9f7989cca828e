"""The routing log's write-behind on its own: a row SQLite can never store costs that row alone."""

from __future__ import annotations

import sqlite3
from collections import Counter

from router.store.log_writer import LogWriter

INSERT = "INSERT INTO notes (text) VALUES (?)"


async def test_a_row_the_database_refuses_is_dropped_alone_and_the_rest_written(tmp_path):
    path = tmp_path / "log.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE notes (text TEXT NOT NULL)")
    counters: Counter[str] = Counter()
    writer = await LogWriter(path, INSERT, counters).start()
    try:
        for text in ("early", "lone \ud800 surrogate", "late"):
            writer.put((text,))
        assert await writer.flush(10.0)
        writer.put(("after",))  # the writer goes on taking rows
        assert await writer.flush(10.0)
    finally:
        await writer.close()
    with sqlite3.connect(path) as conn:
        stored = [row[0] for row in conn.execute("SELECT text FROM notes ORDER BY rowid")]
    assert stored == ["early", "late", "after"]
    assert counters["log_rows_dropped"] == 1
