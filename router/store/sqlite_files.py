"""The SQLite file itself: a clear line for a path it cannot use, created readable by its owner
only, a warning when other accounts can read it or its WAL and SHM files; whether a file put
back at its path under a running process can be opened."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import stat
from collections.abc import AsyncIterator
from pathlib import Path

try:
    import fcntl
except ImportError:  # not on this platform: migrations rely on SQLite's write lock alone
    fcntl = None  # type: ignore[assignment]

from router.config import ConfigError, user_data_dir

log = logging.getLogger(__name__)

SQLITE_HEADER = b"SQLite format 3\x00"


def check_database_path(path: Path) -> None:
    """One clear line before SQLite gets a path it cannot use (a folder, another kind of file,
    a place it may not write)."""
    if path.is_dir():
        raise ConfigError(f"database {path}: is a folder; give a file path (--db FILE)")
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)  # the data folder: owner only
    except OSError as exc:
        raise ConfigError(f"database {path}: cannot create its folder ({exc.strerror})") from None
    if path.exists():
        try:
            with path.open("rb") as handle:
                header = handle.read(len(SQLITE_HEADER))
        except OSError as exc:
            raise ConfigError(f"database {path}: cannot read it ({exc.strerror})") from None
        if header and header != SQLITE_HEADER:
            raise ConfigError(f"database {path}: not an SQLite database")
        writable = os.access(path, os.W_OK)
    else:
        writable = os.access(path.parent, os.W_OK)
    if not writable:
        raise ConfigError(f"database {path}: read-only; crabbot needs to write there")


def create_private(path: Path) -> None:
    """Create `path` empty and readable by its owner only (0600) unless it exists. SQLite gives
    the WAL and SHM files the database file's mode, so they are private too."""
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))


def readable_by_others(path: Path) -> bool:
    """Whether another account may read `path` (a file) or list and enter it (a folder)."""
    try:
        mode = path.stat().st_mode
    except OSError:
        return False
    bits = (stat.S_IRWXG | stat.S_IRWXO) if path.is_dir() else (stat.S_IRGRP | stat.S_IROTH)
    return bool(mode & bits)


def warn_if_readable(*paths: Path) -> list[Path]:
    """Warn once a path for each existing file or folder other accounts can read; return them."""
    exposed = [path for path in paths if path.exists() and readable_by_others(path)]
    for path in exposed:
        fix = "chmod 700" if path.is_dir() else "chmod 600"
        mode = stat.S_IMODE(path.stat().st_mode)
        log.warning("%s is readable by other accounts (mode %o): %s '%s'", path, mode, fix, path)
    return exposed


def database_files(path: Path) -> tuple[Path, ...]:
    """The database, its WAL and SHM files, and the per-user data folder when it lives there (a
    folder a config file names is the owner's to set; crabbot creates it 0700 when it must)."""
    files = (path, Path(f"{path}-wal"), Path(f"{path}-shm"))
    return (*files, path.parent) if path.parent == user_data_dir() else files


def put_back_problem(path: Path) -> str | None:
    """What keeps a file put back at a database's path under a running process from being
    opened: not an SQLite file, or one still being copied (shorter than its header says)."""
    try:
        with path.open("rb") as handle:
            header = handle.read(100)
            size = os.fstat(handle.fileno()).st_size
    except OSError as exc:
        return f"replaced by a file crabbot cannot read ({exc.strerror})"
    if not header:
        return "replaced by an empty file"
    if len(header) < 100 or header[:16] != SQLITE_HEADER:
        return "replaced by a file that is not an SQLite database"
    page_size = int.from_bytes(header[16:18], "big")
    page_size = 65536 if page_size == 1 else page_size
    pages = int.from_bytes(header[28:32], "big")
    # The page count is only kept when the change counter matches "version valid for".
    if header[24:28] == header[92:96] and size < pages * page_size:
        return f"replaced by a file still being written ({size} of {pages * page_size} bytes)"
    return None


def open_lock_file(path: str, without: str) -> int | None:
    """A descriptor on the lock file at `path` (made owner-only), for flock; None, with a
    warning that says what goes on `without` it, when it cannot be opened."""
    try:
        return os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as exc:
        log.warning("cannot open %s (%s): %s", path, exc.strerror, without)
        return None


MIGRATION_LOCK_SUFFIX = "-migrate.lock"  # beside the database, as its -wal and -shm files are


@contextlib.asynccontextmanager
async def migration_file_lock(database: Path) -> AsyncIterator[None]:
    """Held while one process migrates the database: processes starting at once on a new file
    would otherwise each read version 0 and apply the first migration twice. A lock file of
    its own (flock), never the database file: closing another descriptor on that file would
    drop SQLite's own locks. The kernel lets go of a dead holder's lock."""
    fd = (
        None if fcntl is None else open_lock_file(f"{database}{MIGRATION_LOCK_SUFFIX}", "migrating")
    )
    if fd is None:
        yield
        return
    try:
        await asyncio.to_thread(fcntl.flock, fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing the only descriptor lets go of the lock
