"""The routing log's crash spool: each row the write-behind queues is first appended to a local
file, so rows a killed process had not yet committed are written by the next process to start
on the same data folder (replay), once each."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import itertools
import json
import logging
import os
import secrets
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from router.config import DatabaseSettings
from router.store import database
from router.store.database import Database, DatabaseError, OperationalError, scrub

log = logging.getLogger(__name__)

SUFFIX = ".rows"  # a spool file; replay reads only these
MAKING = ".making"  # a file being made: renamed to SUFFIX once its lock is held
REPLAY_BATCH = 256
RETRY_S = (0.5, 1.0, 2.0, 5.0, 10.0)  # between replays while the database refuses the rows


def spool_folder(settings: DatabaseSettings) -> Path | None:
    """Where this database's spool lives: beside the SQLite file (`crabbot.db-spool`); with
    PostgreSQL, in the data folder, named for the URL (its password left out), so processes of
    one database share one folder and two databases never meet. None in memory."""
    if str(settings.path) == ":memory:":
        return None
    url = database.database_url(settings)  # the module's: tests stand one in
    if url is None:
        return settings.path.with_name(settings.path.name + "-spool")
    digest = hashlib.sha256(scrub(url).encode()).hexdigest()[:12]
    return settings.path.parent / f"postgresql-{digest}-spool"


def _plain(value: object) -> object:
    """JSON for a value json does not know (a numpy number)."""
    item = getattr(value, "item", None)
    return item() if callable(item) else str(value)


def encode(row: Sequence[Any]) -> bytes:
    """One row as one line (ASCII JSON: any str, a lone surrogate too, comes back the same)."""
    return (json.dumps(list(row), separators=(",", ":"), default=_plain) + "\n").encode()


@dataclass
class _Segment:
    path: Path
    fd: int
    rows: int = 0  # appended
    done: int = 0  # of those, committed (or dropped) by the writer


class Spool:
    """One process's spool: files it holds locked (flock) while it lives, whose rows are those
    queued and not yet committed, in queue order.

    `append` is one os.write to a file opened with O_APPEND and no fsync: a row is in the
    kernel's page cache when `put` returns, which a SIGKILL keeps; a power cut or a kernel crash
    may lose it (out of scope). The file holds exactly the row, so it keeps the prompt only when
    [privacy] store_prompts does; files are readable by their owner only (0600, folder 0700).

    After each commit the committed rows leave: the file is emptied when nothing waits, else
    later rows go to a new file and the old one is removed once all its rows are committed."""

    def __init__(self, folder: Path, counters: Counter[str]) -> None:
        self.folder = folder
        self.counters = counters
        self._segments: list[_Segment] = []
        self._failed = False

    def open(self) -> bool:
        """Make the folder and this process's first file; False (logged, counted as
        spool_errors) when the folder cannot be used: the rows then wait in memory only."""
        try:
            self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
            self._segments.append(self._new_segment())
        except OSError as exc:
            self._fail("cannot use the spool folder", exc)
            return False
        return True

    def _new_segment(self) -> _Segment:
        """A new locked file. Made under another name and renamed once locked, so a replay
        never takes a live process's new file for a dead one's."""
        name = f"{os.getpid()}-{secrets.token_hex(4)}"
        making = self.folder / (name + MAKING)
        fd = os.open(making, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            path = self.folder / (name + SUFFIX)
            os.rename(making, path)
        except OSError:
            os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(making)
            raise
        return _Segment(path, fd)

    def append(self, row: Sequence[Any]) -> None:
        """Write one queued row; never raises (a failing disk is logged and counted)."""
        if not self._segments:
            return
        segment = self._segments[-1]
        segment.rows += 1  # counted even when the write fails: `committed` counts queue rows
        try:
            os.write(segment.fd, encode(row))
        except (OSError, TypeError, ValueError) as exc:
            self._fail("a row could not be written to the spool", exc)

    def committed(self, count: int) -> None:
        """The writer's oldest `count` rows are committed (or dropped): they leave the spool."""
        while count and self._segments:
            segment = self._segments[0]
            taken = min(count, segment.rows - segment.done)
            segment.done += taken
            count -= taken
            if segment.done < segment.rows:
                break
            if len(self._segments) == 1:
                self._empty(segment)
                break
            self._remove(self._segments.pop(0))
        last = self._segments[-1] if self._segments else None
        if last is not None and 0 < last.done < last.rows:
            # Part of the current file is committed: later rows go to a new one.
            try:
                self._segments.append(self._new_segment())
            except OSError as exc:
                self._fail("cannot start a new spool file", exc)

    def _empty(self, segment: _Segment) -> None:
        try:
            os.ftruncate(segment.fd, 0)  # O_APPEND: the next row goes to the new end, 0
        except OSError as exc:
            self._fail("cannot empty the spool file", exc)
        else:
            segment.rows = segment.done = 0

    def _remove(self, segment: _Segment) -> None:
        with contextlib.suppress(OSError):
            os.unlink(segment.path)
        os.close(segment.fd)

    def close(self, keep: bool = False) -> None:
        """Stop: the files are removed, or with `keep` (rows the database refused at shutdown)
        left, unlocked, for the next start to write."""
        for segment in self._segments:
            if keep:
                os.close(segment.fd)
            else:
                self._remove(segment)
        self._segments.clear()

    @property
    def files(self) -> list[Path]:
        return [segment.path for segment in self._segments]

    def _fail(self, what: str, exc: BaseException) -> None:
        self.counters["spool_errors"] += 1
        if not self._failed:  # once: a full disk would say it for every row
            self._failed = True
            log.error("routing log: %s (%s): a kill may lose unwritten rows", what, exc)


def _take(path: Path) -> int | None:
    """An fd holding the lock of a dead process's file still at `path`; None when a live
    process holds it or another replay took it first."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        if os.fstat(fd).st_ino == os.stat(path).st_ino:  # not removed by a replay meanwhile
            return fd
    except OSError:
        pass
    os.close(fd)
    return None


def _rows(data: bytes, path: Path, width: int) -> list[list[Any]]:
    """The file's rows; one spooled by an older crabbot, before the log gained a column
    (columns are only ever added at the end), gets NULL for the columns it did not know."""
    rows, broken = [], 0
    for line in data.splitlines():
        try:
            row = json.loads(line)
            rows.append(row + [None] * (width - len(row)))
        except ValueError:  # the last line of a write the kill cut short
            broken += 1
    if broken:
        log.warning("routing log: %d unreadable lines skipped in %s", broken, path)
    return rows


async def _write(db: Database, sql: str, rows: list[list[Any]], counters: Counter[str]) -> None:
    """Every row, in order; a row the database will never take is dropped alone, counted."""
    for start in range(0, len(rows), REPLAY_BATCH):
        batch = rows[start : start + REPLAY_BATCH]
        try:
            async with db.transaction() as conn:
                await conn.execute_many(sql, batch)
            continue
        except OperationalError:
            raise
        except (DatabaseError, ValueError):
            pass
        for row in batch:
            try:
                async with db.transaction() as conn:
                    await conn.execute(sql, row)
            except OperationalError:
                raise
            except (DatabaseError, ValueError) as exc:
                log.warning("routing log: a spooled row the database refuses is dropped (%s)", exc)
                counters["log_rows_dropped"] += 1


async def replay(
    folder: Path, db: Database, sql: str, width: int, counters: Counter[str]
) -> int | None:
    """Write the rows of the spool files of processes that died (those whose lock can be taken)
    with `sql` (`width` values a row), which must be idempotent (a row committed just before
    the kill is spooled still); then remove the files. Returns the rows written; None when the
    database refuses them for now (logged, counted as spool_errors): the files stay for the
    next attempt."""
    if not folder.is_dir():
        return 0
    written = 0
    for path in sorted(folder.iterdir()):
        if path.suffix == MAKING and (fd := _take(path)) is not None:
            with contextlib.suppress(OSError):
                os.unlink(path)  # died while making it: nothing in it
            os.close(fd)
        if path.suffix != SUFFIX or (fd := _take(path)) is None:
            continue
        try:
            with open(fd, "rb", closefd=False) as handle:
                rows = _rows(handle.read(), path, width)
            await _write(db, sql, rows, counters)
        except (OSError, OperationalError) as exc:
            counters["spool_errors"] += 1
            log.error("routing log: cannot write the spooled rows of %s now (%s)", path, exc)
            os.close(fd)
            return None
        os.unlink(path)
        os.close(fd)
        written += len(rows)
        counters["spool_rows_replayed"] += len(rows)
    if written:
        log.warning("routing log: %d rows a stopped process left unwritten are written", written)
    return written


class SpoolReplay:
    """The rows processes that died left spooled, written at a start and, while the database
    refuses them (a start during a database restart), again in the background until it takes
    them: the process serves meanwhile, and no later start is needed."""

    def __init__(
        self, folder: Path, db: Database, sql: str, width: int, counters: Counter[str]
    ) -> None:
        self.folder, self.db, self.sql = folder, db, sql
        self.width, self.counters = width, counters
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        if await self._attempt() is None:
            self._task = asyncio.create_task(self._until_written(), name="spool-replay")

    async def _attempt(self) -> int | None:
        try:
            return await replay(self.folder, self.db, self.sql, self.width, self.counters)
        except (OSError, DatabaseError):
            log.exception("could not write the rows a stopped process spooled")
            self.counters["spool_errors"] += 1
            return None

    async def _until_written(self) -> None:
        for attempt in itertools.count():
            await asyncio.sleep(RETRY_S[min(attempt, len(RETRY_S) - 1)])
            if await self._attempt() is not None:
                return

    async def written(self) -> None:
        """Wait until the rows that waited are written (at once when none did)."""
        if self._task is not None:
            await asyncio.shield(self._task)

    async def close(self) -> None:
        """Stop retrying; rows still refused stay spooled for the next start."""
        if self._task is not None and not self._task.done():
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
