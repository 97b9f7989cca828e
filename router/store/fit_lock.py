"""Processes starting at once on one SQLite file fit the classifier once: the one that holds an
advisory lock (flock) on a file beside the database fits and stores; the others look for its
fit at intervals (SQLite has no notifications). The kernel lets go of a dead holder's lock."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os

try:
    import fcntl
except ImportError:  # not on this platform: each process fits for itself
    fcntl = None  # type: ignore[assignment]

from router.store.sqlite_files import open_lock_file

log = logging.getLogger(__name__)

LOOK_S = 0.5  # how often a waiting process looks for the stored fit
SUFFIX = "-fit.lock"  # beside the database, as its -wal and -shm files are


class FileFitLock:
    """router.fitting.RefitClaim on a lock file beside an SQLite database."""

    def __init__(self, database_path: str) -> None:
        self.path = database_path + SUFFIX
        self._fd: int | None = None

    async def claim(self) -> bool:
        """True when this process holds the lock, or cannot ask (then it fits alone)."""
        if fcntl is None:
            return True
        fd = open_lock_file(self.path, "fitting without it")
        if fd is None:
            return True
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        except OSError:
            os.close(fd)
            return True
        self._fd = fd
        return True

    async def release(self, refitted: bool) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)  # closing the last descriptor lets go of the lock

    async def fit_stored(self, timeout_s: float) -> None:
        await asyncio.sleep(min(timeout_s, LOOK_S))
