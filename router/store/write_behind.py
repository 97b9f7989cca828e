"""Write-behind for any small write (a memory exchange, a pool addition): each job is a few SQL
statements, committed in batches on a connection of its own like the routing log, so a locked or
slow database delays no answer; jobs wait in memory, are retried, and past a bound are counted
as dropped."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

from router.store.log_writer import LogWriter, Row

log = logging.getLogger(__name__)

Statement = tuple[str, Sequence[Any]]


class Job(NamedTuple):
    """Statements committed together; `done` is called once they are written or dropped."""

    statements: tuple[Statement, ...]
    done: Callable[[bool], None] | None = None


class JobWriter(LogWriter):
    """A LogWriter whose rows are Jobs: `put(Job(...))` never waits."""

    def __init__(self, counters: Counter[str], label: str, prefix: str) -> None:
        super().__init__("", counters, label=label, counter_prefix=prefix)
        self._written: set[int] = set()

    def put(self, row: Row) -> None:
        full = len(self._pending) >= self.max_pending
        super().put(row)  # past the bound: dropped and counted
        if full and isinstance(row, Job) and row.done is not None:
            row.done(False)

    async def _write_batch(self) -> None:
        batch = [job for job in self._pending[: self.batch_rows] if isinstance(job, Job)]
        await super()._write_batch()
        for job in batch:
            written = id(job) in self._written
            self._written.discard(id(job))
            if job.done is not None:
                try:
                    job.done(written)
                except Exception:  # a caller's callback must not stop the writer
                    log.exception("%s: a written job's callback failed", self.label)
                    self.counters[self.errors] += 1

    async def _commit(self, batch: list[Row]) -> None:
        assert self._conn is not None
        # transaction(): on a shared connection (an in-memory database) the writer takes its
        # turn with the other tasks' transactions rather than committing them halfway.
        async with self._conn.transaction() as conn:
            for job in batch:
                assert isinstance(job, Job)
                for sql, parameters in job.statements:
                    await conn.execute(sql, parameters)
        self._written.update(id(job) for job in batch)
