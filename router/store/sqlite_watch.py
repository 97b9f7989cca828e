"""An SQLite file under a running process: what a process's connections to one path share to
notice (one os.stat) that the file there is no longer the one they opened, say it once (logged,
counted), and follow a usable database put back there (see SqliteDatabase.check_file)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from router.store.database import Database

log = logging.getLogger(__name__)

FileId = tuple[int, int]  # (device, inode)
FileState = tuple[int, int, int, int]  # (device, inode, size, mtime_ns): a file's verdict holds
Check = Callable[["Database"], Awaitable[object]]


def file_id(path: str) -> FileId | None:
    """The identity of the file at `path`; None when there is none (or it cannot be reached:
    a folder on the way made unreadable)."""
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return stat.st_dev, stat.st_ino


def file_state(path: str) -> FileState | None:
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns


class FileWatch:
    """One per SQLite path in a process, shared by its connections (the main one and the
    write-behind writers'): the loss said once, the checks a file put back must pass (the
    migrations that ran at the start, registered by name), the file adopted last."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.checks: dict[str, Check] = {}
        self.lost: str | None = None  # what was said last; None while writes go to the file
        self.adopted: FileId | None = None  # the last file put back and found usable
        self.generation = 0  # one more at each file adopted: connections still on the old follow
        self.lock = asyncio.Lock()  # one connection at a time checks a file put back
        self.verdicts: dict[FileState, str] = {}  # files found unusable, until they change
        self._sidecars: set[FileId] = set()
        self.opened()
        self._counters: list[Counter[str]] = []

    def opened(self) -> None:
        """Note the -wal and -shm files of the file just opened (SQLite creates them at the
        first read): the file lost, they are not the next one's."""
        self._sidecars = {found for found in map(file_id, self._sidecar_paths()) if found}

    def count_in(self, counters: Counter[str]) -> None:
        """Count the losses (db_file_lost) and the writes refused meanwhile (db_writes_refused)
        in `counters` too."""
        if not any(known is counters for known in self._counters):
            self._counters.append(counters)

    def _count(self, name: str) -> None:
        for counters in self._counters:
            counters[name] += 1

    def report(self, lost: str) -> str:
        """Say (an error line; db_file_lost for each loss) that writes cannot go to the file
        at the path, once until that changes; return `lost`."""
        if self.lost is None:
            self._count("db_file_lost")
        if lost != self.lost:
            log.error(
                "the database file %s was %s under this process: writes wait in memory or are"
                " refused until a crabbot database is at that path again",
                self.path,
                lost,
            )
        self.lost = lost
        return lost

    def refused(self) -> None:
        """A write was refused (OperationalError) while there is no usable file."""
        self._count("db_writes_refused")

    def back(self) -> None:
        """The file opened is at the path again (a hard link put back)."""
        if self.lost is not None:
            log.warning("the database file %s is back: writing to it again", self.path)
            self.lost = None

    def adopt(self, found: FileId) -> None:
        """`found`, put back at the path, passed the checks: every connection moves to it."""
        self.adopted = found
        self.generation += 1
        log.warning("reopened the database on the file now at %s", self.path)
        self.lost = None

    def clear_stale_sidecars(self) -> None:
        """Remove the -wal and -shm files the lost file left beside its path: SQLite would
        read them as the new file's own (its WAL's pages over the new file's)."""
        for sidecar in self._sidecar_paths():
            if file_id(sidecar) in self._sidecars:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(sidecar)
                log.warning("removed %s, left by the lost database file", sidecar)
        self._sidecars.clear()

    def _sidecar_paths(self) -> tuple[str, str]:
        return f"{self.path}-wal", f"{self.path}-shm"
