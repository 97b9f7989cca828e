"""The routing log's write-behind on its own: a row the database can never store costs that row
alone, and a connection lost after its commit stops nothing."""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import pytest

from router.store.database import Database
from router.store.log_writer import LogWriter
from router.store.postgres import PostgresDatabase
from router.store.write_behind import Job, JobWriter
from tests.db_helpers import open_db

INSERT = "INSERT INTO notes (n, text) VALUES (?, ?)"


async def notes_db(tmp_path: Path) -> Database:
    """A SQLite file with the table the writers under test fill."""
    db = await open_db(tmp_path / "log.db")
    await db.execute("CREATE TABLE notes (n INTEGER, text TEXT NOT NULL)")
    return db


async def closed_and_stored(writer: LogWriter | JobWriter, db: Database) -> list[str]:
    """The writer closed (its queue written or given up), then the texts stored, in order."""
    await writer.close()
    stored = [row[0] for row in await db.fetch_all("SELECT text FROM notes ORDER BY n")]
    await db.close()
    return stored


async def test_a_row_the_database_refuses_is_dropped_alone_and_the_rest_written(tmp_path):
    db = await notes_db(tmp_path)
    counters: Counter[str] = Counter()
    writer = await LogWriter(INSERT, counters).start(db)
    try:
        for n, text in enumerate(("early", "lone \ud800 surrogate", "late")):
            writer.put((n, text))
        assert await writer.flush(10.0)
        writer.put((3, "after"))  # the writer goes on taking rows
        assert await writer.flush(10.0)
    finally:
        stored = await closed_and_stored(writer, db)
    assert stored == ["early", "late", "after"]
    assert counters["log_rows_dropped"] == 1


async def connect_to(url: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A connection to the server a PostgreSQL URL names: its Unix socket (`?host=/dir`, as
    scripts/pg_throwaway.py gives) or its TCP address."""
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query))
    host = query.get("host") or parts.hostname or "127.0.0.1"
    port = int(query.get("port") or parts.port or 5432)
    if host.startswith("/"):
        return await asyncio.open_unix_connection(f"{host}/.s.PGSQL.{port}")
    return await asyncio.open_connection(host, port)


class CutOnReset:
    """A TCP relay to PostgreSQL that, once armed, cuts the connection whose client sends the
    pool's reset (what asyncpg runs as a connection goes back to the pool, after the commit):
    the server restarted between a batch's commit and its connection's return."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.armed = False
        self.cuts = 0
        self.server: asyncio.Server | None = None
        self.ends: list[asyncio.StreamWriter] = []

    async def start(self) -> str:
        """The URL that reaches the database through the relay."""
        self.server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        parts = urlsplit(self.url)
        user = f"{parts.username}@" if parts.username else ""
        query = urlencode([(k, v) for k, v in parse_qsl(parts.query) if k not in ("host", "port")])
        # Plain text, so the relay can read it (a server with ssl on would be asked for TLS).
        query = urlencode([*parse_qsl(query), ("sslmode", "disable")])
        return urlunsplit(parts._replace(netloc=f"{user}127.0.0.1:{port}", query=query))

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream_reader, upstream_writer = await connect_to(self.url)
        self.ends += [writer, upstream_writer]

        async def pump(source: asyncio.StreamReader, sink: asyncio.StreamWriter, up: bool) -> None:
            while data := await source.read(65536):
                if up and self.armed and b"RESET ALL" in data:
                    self.armed = False
                    self.cuts += 1
                    break
                sink.write(data)
                await sink.drain()
            for end in (writer, upstream_writer):
                end.close()

        with contextlib.suppress(OSError):
            await asyncio.gather(
                pump(reader, upstream_writer, True), pump(upstream_reader, writer, False)
            )

    async def close(self) -> None:
        assert self.server is not None
        self.server.close()
        for end in self.ends:
            end.close()
        await self.server.wait_closed()


async def test_a_connection_lost_on_its_way_back_to_the_pool_stops_no_writer(database_backend):
    """On PostgreSQL a batch's connection can die after its commit, as it goes back to the pool
    (a server restart at that moment): the rows are written, and the writer goes on."""
    if database_backend is None:
        pytest.skip("PostgreSQL's connection pool (runs with CRABBOT_TEST_DATABASE_URL set)")
    relay = CutOnReset(database_backend)
    through = await relay.start()
    db = await PostgresDatabase.open(through, pool_size=2)
    counters: Counter[str] = Counter()
    writer = await LogWriter(INSERT, counters).start(db)
    try:
        await db.execute("CREATE TABLE notes (n INTEGER, text TEXT NOT NULL)")
        relay.armed = True
        writer.put((0, "before the cut"))
        assert await writer.flush(10.0), "the writer stopped with its row unwritten"
        assert relay.cuts == 1
        writer.put((1, "after the cut"))
        assert await writer.flush(10.0), "the writer stopped taking rows"
        stored = [row[0] for row in await db.fetch_all("SELECT text FROM notes ORDER BY n")]
    finally:
        await writer.close()
        await db.close()
        await relay.close()
    assert stored == ["before the cut", "after the cut"]
    assert counters["log_rows_dropped"] == 0


class FailsOnce:
    """A database whose next transaction raises what no seam maps (a driver's surprise), then
    works: the error a writer must outlive."""

    def __init__(self, db: Any, owns: bool = False) -> None:
        self.db = db
        self.owns = owns  # a connection of its own (SQLite's writer), not the shared pool
        self.failed = False

    async def writer(self) -> FailsOnce:
        handle = await self.db.writer()
        return FailsOnce(handle, owns=handle is not self.db)

    async def check_file(self) -> str | None:
        return await self.db.check_file()

    def transaction(self) -> Any:
        if not self.failed:
            self.failed = True
            raise RuntimeError("a driver's surprise")
        return self.db.transaction()

    async def close(self) -> None:
        if self.owns:
            await self.db.close()


async def test_an_error_nobody_expected_is_logged_counted_and_outlived(tmp_path, caplog):
    db = await notes_db(tmp_path)
    counters: Counter[str] = Counter()
    writer = await LogWriter(INSERT, counters).start(FailsOnce(db))  # type: ignore[arg-type]
    try:
        writer.put((0, "waited"))
        assert await writer.flush(10.0), "the writer stopped"
        writer.put((1, "after"))
        assert await writer.flush(10.0)
    finally:
        stored = await closed_and_stored(writer, db)
    assert stored == ["waited", "after"]
    assert counters["log_write_errors"] == 1 and counters["log_rows_dropped"] == 0
    assert "the database driver failed unexpectedly" in caplog.text


async def test_a_row_the_driver_cannot_take_at_all_costs_that_row_alone(tmp_path):
    """An integer past 64 bits: on SQLite the driver raises OverflowError, which is no database
    error; tried again, it is a row the database will never take, dropped alone."""
    db = await notes_db(tmp_path)
    counters: Counter[str] = Counter()
    writer = await LogWriter(INSERT, counters).start(db)
    try:
        for n, text in ((0, "early"), (2**64, "too big"), (2, "late")):
            writer.put((n, text))
        assert await writer.flush(10.0), "the writer stopped"
    finally:
        stored = await closed_and_stored(writer, db)
    assert stored == ["early", "late"]
    assert counters["log_rows_dropped"] == 1


async def test_a_jobs_callback_that_fails_stops_no_later_job(tmp_path, caplog):
    db = await notes_db(tmp_path)
    counters: Counter[str] = Counter()
    writer = await JobWriter(counters, "memory", "memory").start(db)

    def broken(_written: bool) -> None:
        raise KeyError("a caller's bug")

    try:
        writer.put(Job(((INSERT, (0, "first")),), broken))
        assert await writer.flush(10.0)
        writer.put(Job(((INSERT, (1, "second")),)))
        assert await writer.flush(10.0), "the writer stopped"
    finally:
        stored = await closed_and_stored(writer, db)
    assert stored == ["first", "second"]
    assert "a written job's callback failed" in caplog.text
