"""The routing log's write-behind: finished rows wait in memory and are written in batches on a
connection of their own (SQLite; PostgreSQL's pool), so no answer waits for the database (a
commit, a lock held elsewhere, a restart). An SQLite file deleted or replaced under it is noticed
before each batch: the rows wait, rather than go into a file nobody will read again, until a
crabbot database is at its path again (Database.check_file)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

from router.store.database import Database, DatabaseError, OperationalError
from router.store.spool import Spool

log = logging.getLogger(__name__)

FLUSH_MS = 200.0  # a finished row waits at most this long before its batch is committed
BATCH_ROWS = 256  # ... or until this many rows are waiting
MAX_PENDING = 10_000  # rows kept while the database refuses them; further rows are dropped
RETRY_S = (0.05, 0.2, 0.5, 1.0)  # waits between attempts while the database refuses a batch
CLOSING_ATTEMPTS = 3  # at shutdown a database that still refuses costs the rows, not the exit

Row = Sequence[Any]


class LogWriter:
    """Queues rows (`put` never waits) and commits them in batches from one background task.

    A hard kill loses the rows finished in the last FLUSH_MS (those not yet committed) unless
    a `spool` keeps them on disk for the next start; a graceful stop (`close`) writes
    everything."""

    def __init__(
        self,
        insert_sql: str,
        counters: Counter[str],
        *,
        flush_ms: float = FLUSH_MS,
        batch_rows: int = BATCH_ROWS,
        max_pending: int = MAX_PENDING,
        label: str = "routing log",
        counter_prefix: str = "log",
    ) -> None:
        self.label = label  # how its log lines name it
        self.dropped = f"{counter_prefix}_rows_dropped"
        self.errors = f"{counter_prefix}_write_errors"
        self.insert_sql = insert_sql
        self.counters = counters
        self.flush_s = flush_ms / 1000
        self.batch_rows = batch_rows
        self.max_pending = max_pending
        self._pending: list[Row] = []
        self._conn: Database | None = None
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._closing = False
        self._task: asyncio.Task[None] | None = None
        self._owns_conn = True
        self._hurry = False
        self._nudge = asyncio.Event()
        # Called with the new depth whenever it changes (a proxy worker publishes it).
        self.on_depth: Callable[[int], None] | None = None
        self.spool: Spool | None = None  # set before start: queued rows also go to disk

    @property
    def depth(self) -> int:
        """Rows finished and not yet committed."""
        return len(self._pending)

    async def start(self, db: Database) -> LogWriter:
        """Open the writer's own handle on `db` (SQLite: a second connection to the file with a
        short busy timeout; in memory and on PostgreSQL: `db` itself, which the caller keeps
        and closes)."""
        self._conn = await db.writer()
        self._owns_conn = self._conn is not db
        self._task = asyncio.create_task(self._run(), name=f"{self.label}-writer")
        return self

    async def check_file(self) -> str | None:
        """None while the writer's database takes writes; else what happened to its SQLite
        file (see Database.check_file, which reopens on a crabbot database put back)."""
        return None if self._conn is None else await self._conn.check_file()

    def put(self, row: Row) -> None:
        """Queue one finished row; never blocks. Past MAX_PENDING the row is dropped, counted
        and logged: the answer matters more than its line in the log."""
        if len(self._pending) >= self.max_pending:
            self.counters[self.dropped] += 1
            if self.counters[self.dropped] in (1, 10, 100) or not (
                self.counters[self.dropped] % 1000
            ):
                log.warning(
                    "%s: %d rows waiting for the database; %d dropped so far",
                    self.label,
                    len(self._pending),
                    self.counters[self.dropped],
                )
            return
        self._pending.append(row)
        if self.spool is not None:
            self.spool.append(row)
        self._depth_changed()
        self._idle.clear()
        self._wake.set()

    async def flush(self, timeout_s: float | None = None) -> bool:
        """Wait until every row queued so far is committed; False when `timeout_s` ran out first
        (the database still refuses the rows: they keep waiting), or at once while the database
        file is deleted or replaced."""
        if self._task is None or self._task.done():
            return not self._pending
        if self._pending and await self.check_file() is not None:
            return False  # nothing is written until the file is back: nobody waits for it
        self._hurry = True
        self._wake.set()
        self._nudge.set()
        try:
            await asyncio.wait_for(self._idle.wait(), timeout_s)
        except TimeoutError:
            return False
        return True

    async def close(self) -> None:
        """Write what is queued, then stop. Rows the database still refuses after the retries
        are counted as dropped and logged."""
        self._closing = True
        self._wake.set()
        self._nudge.set()
        dropped = self.counters[self.dropped]
        if self._task is not None:
            await self._task
        if self.spool is not None:  # rows lost at shutdown stay spooled for the next start
            self.spool.close(keep=self.counters[self.dropped] > dropped)
        if self._conn is not None and self._owns_conn:
            await self._conn.close()
        self._conn = None

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            if not self._pending:
                self._hurry = False
                self._idle.set()
                if self._closing:
                    return
                continue
            if len(self._pending) < self.batch_rows and not (self._closing or self._hurry):
                # Let the batch fill for up to FLUSH_MS; a full batch or close() cuts it short.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._full_or_closing(), self.flush_s)
            await self._write_batch()

    async def _full_or_closing(self) -> None:
        while len(self._pending) < self.batch_rows and not (self._closing or self._hurry):
            self._wake.clear()
            await self._wake.wait()

    async def _write_batch(self) -> None:
        """Commit the oldest batch, retrying while the database refuses it (locked, busy): the
        rows wait in memory, up to MAX_PENDING, and are written when it lets them in. A row it
        can never take (a bad value) is dropped alone, counted, and the rest written."""
        batch = self._pending[: self.batch_rows]
        if await self._commit_retrying(batch) == "refused":
            for row in batch:
                if await self._commit_retrying([row]) == "refused":
                    log.error("%s: a row the database refuses is dropped", self.label)
                    self.counters[self.dropped] += 1
        del self._pending[: len(batch)]
        if self.spool is not None:
            self.spool.committed(len(batch))
        self._depth_changed()
        self._wake.set()  # go round again: more rows, or none left (idle)

    def _depth_changed(self) -> None:
        if self.on_depth is not None:
            self.on_depth(len(self._pending))

    async def _commit_retrying(self, rows: list[Row]) -> str:
        """'written'; 'refused' for a row the database will never take; 'dropped' when a database
        that keeps refusing at shutdown costs the rows."""
        attempt = unexpected = 0
        while True:
            lost = await self.check_file()
            if lost is not None:
                attempt += 1
                if self._closing and attempt >= CLOSING_ATTEMPTS:
                    log.error(
                        "routing log: %d rows lost at shutdown: the database file was %s",
                        len(rows),
                        lost,
                    )
                    self.counters[self.dropped] += len(rows)
                    return "dropped"
                await self._pause(RETRY_S[min(attempt, len(RETRY_S)) - 1])
                continue
            try:
                await self._commit(rows)
            except (DatabaseError, ValueError) as exc:
                error: Exception = exc
            except Exception as exc:  # a driver's error the seam did not map: the writer lives
                unexpected += 1
                if unexpected == 1:  # tried once more: it may have been the moment
                    log.exception("%s: the database driver failed unexpectedly", self.label)
                    error = OperationalError(type(exc).__name__)
                else:  # again: a row the driver cannot take (refused: tried alone, dropped)
                    error = DatabaseError(f"{type(exc).__name__} twice")
            else:
                if attempt:
                    log.info("%s: written again after %d failed attempts", self.label, attempt)
                return "written"
            attempt += 1
            self.counters[self.errors] += 1
            # Locked, busy, disk full: it may pass. A value SQLite cannot store (a lone
            # surrogate) or a broken constraint never will.
            if not isinstance(error, OperationalError):
                log.warning("%s: a batch was refused (%s)", self.label, error)
                return "refused"
            if self._closing and attempt >= CLOSING_ATTEMPTS:
                log.error("%s: %d rows lost at shutdown: %s", self.label, len(rows), error)
                self.counters[self.dropped] += len(rows)
                return "dropped"
            if attempt == 1 or not attempt % 60:
                log.warning(
                    "%s: cannot write (%s); %d rows wait", self.label, error, len(self._pending)
                )
            await self._pause(RETRY_S[min(attempt, len(RETRY_S)) - 1])

    async def _pause(self, seconds: float) -> None:
        """Wait before retrying; flush() and close() cut the wait short."""
        self._nudge.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._nudge.wait(), seconds)

    async def _commit(self, batch: list[Row]) -> None:
        assert self._conn is not None
        async with self._conn.transaction() as conn:
            await conn.execute_many(self.insert_sql, batch)
