"""The routing log's write-behind on its own: a row SQLite can never store costs that row alone."""

from __future__ import annotations

from collections import Counter

from router.store.log_writer import LogWriter
from tests.db_helpers import open_db

INSERT = "INSERT INTO notes (n, text) VALUES (?, ?)"


async def test_a_row_the_database_refuses_is_dropped_alone_and_the_rest_written(tmp_path):
    path = tmp_path / "log.db"
    db = await open_db(path)
    await db.execute("CREATE TABLE notes (n INTEGER, text TEXT NOT NULL)")
    counters: Counter[str] = Counter()
    writer = await LogWriter(INSERT, counters).start(db)
    try:
        for n, text in enumerate(("early", "lone \ud800 surrogate", "late")):
            writer.put((n, text))
        assert await writer.flush(10.0)
        writer.put((3, "after"))  # the writer goes on taking rows
        assert await writer.flush(10.0)
    finally:
        await writer.close()
        stored = [row[0] for row in await db.fetch_all("SELECT text FROM notes ORDER BY n")]
        await db.close()
    assert stored == ["early", "late", "after"]
    assert counters["log_rows_dropped"] == 1
