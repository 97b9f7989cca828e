"""The SQLite file: open it (WAL) through aiosqlite, apply each component's ordered migrations.
One connection is shared by every task of a process, so its reads and transactions never
interleave (see `fetch_one` and `transaction`)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import stat
import weakref
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

import aiosqlite

from router.config import ConfigError, user_data_dir

log = logging.getLogger(__name__)
ROUTER_MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE settings (
        key TEXT PRIMARY KEY,
        value TEXT NOT NULL,
        updated_at REAL NOT NULL
    );
    CREATE TABLE routing_log (
        id INTEGER PRIMARY KEY,
        at REAL NOT NULL,
        conv_key TEXT,
        prompt_hash TEXT NOT NULL,
        prompt TEXT NOT NULL,
        mode TEXT NOT NULL,
        category TEXT,
        tier TEXT NOT NULL,
        tier_mapping_version TEXT NOT NULL,
        confidence REAL,
        source TEXT NOT NULL,
        model TEXT NOT NULL,
        llm_category TEXT,
        llm_confidence REAL,
        llm_latency_ms REAL,
        knn_category TEXT,
        knn_tier TEXT,
        knn_confidence REAL,
        knn_latency_ms REAL,
        prior_category TEXT,
        latency_ms REAL NOT NULL,
        prompt_tokens INTEGER,
        completion_tokens INTEGER,
        error TEXT
    );
    CREATE INDEX routing_log_at ON routing_log (at);
    CREATE INDEX routing_log_conv ON routing_log (conv_key, id);
    CREATE TABLE pool (
        id INTEGER PRIMARY KEY,
        prompt_hash TEXT NOT NULL,
        text TEXT NOT NULL,
        embedding BLOB NOT NULL,
        embedder_id TEXT NOT NULL,
        category TEXT NOT NULL,
        label_source TEXT NOT NULL,
        confidence REAL,
        added_at REAL NOT NULL,
        UNIQUE (embedder_id, prompt_hash)
    );
    CREATE TABLE taxonomy_audit (
        id INTEGER PRIMARY KEY,
        at REAL NOT NULL,
        action TEXT NOT NULL,
        from_category TEXT,
        to_category TEXT,
        log_rows INTEGER NOT NULL,
        pool_rows INTEGER NOT NULL,
        old_version TEXT,
        new_version TEXT
    );
    """,
    # /reset: the conversation's routing context starts over from this time.
    """
    CREATE TABLE context_resets (
        conv_key TEXT PRIMARY KEY,
        at REAL NOT NULL
    );
    """,
    # Every request gets a row (aliases and passthrough models too: tier may be unknown), written
    # once it has ended, with how it ended and a decision id the client sees in a header.
    """
    CREATE TABLE routing_log_v3 (
        id INTEGER PRIMARY KEY,
        decision_id TEXT,
        at REAL NOT NULL,
        conv_key TEXT,
        prompt_hash TEXT NOT NULL,
        prompt TEXT NOT NULL,
        mode TEXT NOT NULL,
        category TEXT,
        tier TEXT,
        tier_mapping_version TEXT NOT NULL,
        confidence REAL,
        source TEXT NOT NULL,
        model TEXT NOT NULL,
        llm_category TEXT,
        llm_confidence REAL,
        llm_latency_ms REAL,
        knn_category TEXT,
        knn_tier TEXT,
        knn_confidence REAL,
        knn_latency_ms REAL,
        prior_category TEXT,
        latency_ms REAL NOT NULL,
        prompt_tokens INTEGER,
        completion_tokens INTEGER,
        outcome TEXT,
        error TEXT
    );
    INSERT INTO routing_log_v3 (id, at, conv_key, prompt_hash, prompt, mode, category, tier,
        tier_mapping_version, confidence, source, model, llm_category, llm_confidence,
        llm_latency_ms, knn_category, knn_tier, knn_confidence, knn_latency_ms, prior_category,
        latency_ms, prompt_tokens, completion_tokens, error)
    SELECT id, at, conv_key, prompt_hash, prompt, mode, category, tier, tier_mapping_version,
        confidence, source, model, llm_category, llm_confidence, llm_latency_ms, knn_category,
        knn_tier, knn_confidence, knn_latency_ms, prior_category, latency_ms, prompt_tokens,
        completion_tokens, error
    FROM routing_log;
    DROP TABLE routing_log;
    ALTER TABLE routing_log_v3 RENAME TO routing_log;
    CREATE INDEX routing_log_at ON routing_log (at);
    CREATE INDEX routing_log_conv ON routing_log (conv_key, id);
    CREATE UNIQUE INDEX routing_log_decision ON routing_log (decision_id);
    """,
    # A voice message's transcription time, beside the routing latency it came before.
    "ALTER TABLE routing_log ADD COLUMN transcription_ms REAL;",
    # The local classifier as last fitted, with what it was fitted on (see fitted_state.py).
    """
    CREATE TABLE fitted_state (
        name TEXT PRIMARY KEY,
        fingerprint TEXT NOT NULL,
        state BLOB NOT NULL,
        at REAL NOT NULL
    );
    """,
    # The process that wrote a row while its request was still open (NULL once it has ended):
    # a start marks only the open rows of processes no longer running as interrupted.
    "ALTER TABLE routing_log ADD COLUMN open_pid INTEGER;",
    # A start reads the categories in use and the open rows through these, not by scanning the
    # whole log (200,000 rows: 0.25-0.45 s at every start, now under a millisecond).
    """
    CREATE INDEX routing_log_category ON routing_log (category) WHERE category IS NOT NULL;
    CREATE INDEX routing_log_llm_category ON routing_log (llm_category)
        WHERE llm_category IS NOT NULL;
    CREATE INDEX routing_log_knn_category ON routing_log (knn_category)
        WHERE knn_category IS NOT NULL;
    CREATE INDEX routing_log_prior_category ON routing_log (prior_category)
        WHERE prior_category IS NOT NULL;
    CREATE INDEX routing_log_open ON routing_log (open_pid) WHERE open_pid IS NOT NULL;
    CREATE INDEX pool_category ON pool (category);
    """,
    # Who spoke (platform:user id, or a proxy request's user/name): in a group, a turn's context
    # is the same person's previous turn, not whatever anyone said last.
    """
    ALTER TABLE routing_log ADD COLUMN user_key TEXT;
    CREATE INDEX routing_log_conv_user ON routing_log (conv_key, user_key, id)
        WHERE conv_key IS NOT NULL;
    """,
    # Privacy (issue 25): a stored prompt is capped, its full length kept beside it; a pool entry
    # the categorizer taught from a chat message records whose message it was, so /forget and
    # `crabbot forget` can erase it.
    """
    ALTER TABLE routing_log ADD COLUMN prompt_chars INTEGER;
    ALTER TABLE pool ADD COLUMN conv_key TEXT;
    ALTER TABLE pool ADD COLUMN user_key TEXT;
    CREATE INDEX pool_conv ON pool (conv_key) WHERE conv_key IS NOT NULL;
    CREATE INDEX pool_user ON pool (user_key) WHERE user_key IS NOT NULL;
    """,
    # Issue 24: where a learned pool entry came from (its origin: a chat, a conversation, a proxy
    # client key; NULL for the seed and imports), and the quarantine where labels that could
    # steer the pool wait for `crabbot pool review`.
    """
    ALTER TABLE pool ADD COLUMN origin TEXT;
    CREATE INDEX pool_origin ON pool (origin) WHERE origin IS NOT NULL;
    CREATE TABLE pool_quarantine (
        id INTEGER PRIMARY KEY,
        at REAL NOT NULL,
        origin TEXT NOT NULL,
        prompt_hash TEXT NOT NULL,
        text TEXT NOT NULL,
        embedding BLOB NOT NULL,
        embedder_id TEXT NOT NULL,
        category TEXT NOT NULL,
        confidence REAL,
        local_category TEXT,
        local_confidence REAL,
        reason TEXT NOT NULL,
        UNIQUE (embedder_id, prompt_hash)
    );
    CREATE INDEX pool_quarantine_origin ON pool_quarantine (origin);
    """,
)


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


async def connect(path: Path | str) -> aiosqlite.Connection:
    """Open (creating the folder and the file readable by their owner only, and warning about
    existing ones others can read) with WAL, a busy timeout and Row results."""
    if str(path) != ":memory:":
        check_database_path(Path(path))
        create_private(Path(path))
        warn_if_readable(*database_files(Path(path)))
    conn = await aiosqlite.connect(str(path), timeout=10.0)
    conn.row_factory = aiosqlite.Row
    await conn.execute("PRAGMA journal_mode=WAL")
    await conn.execute("PRAGMA synchronous=NORMAL")
    await conn.execute("PRAGMA foreign_keys=ON")
    # Erased and expired text is overwritten in the file, not left in its free pages.
    await conn.execute("PRAGMA secure_delete=ON")
    return conn


async def checkpoint(conn: aiosqlite.Connection) -> None:
    """Copy the WAL into the database and empty it, so erased text leaves the WAL file too (as
    far as no other connection's open read holds older pages)."""
    await conn.execute_fetchall("PRAGMA wal_checkpoint(TRUNCATE)")


_TRANSACTION_LOCKS: weakref.WeakKeyDictionary[aiosqlite.Connection, asyncio.Lock] = (
    weakref.WeakKeyDictionary()
)


async def fetch_one(
    conn: aiosqlite.Connection, sql: str, parameters: Iterable[object] = ()
) -> aiosqlite.Row | None:
    """The first row, read in one step. A cursor left open across an await keeps a read snapshot
    on the shared connection, and a write another task makes on it then fails at once with
    'database is locked' (SQLite skips the busy timeout when a reader upgrades to a writer)."""
    rows = await conn.execute_fetchall(sql, parameters)
    return next(iter(rows), None)


@asynccontextmanager
async def transaction(conn: aiosqlite.Connection) -> AsyncIterator[aiosqlite.Connection]:
    """Commit the writes made inside, or roll them back when one fails: a failed write must not
    leave its transaction open and hold the write lock (the routing log's writer waits on it).
    Tasks sharing the connection take turns, so none commits or rolls back another's writes."""
    lock = _TRANSACTION_LOCKS.setdefault(conn, asyncio.Lock())
    async with lock:
        try:
            yield conn
        except BaseException:
            await conn.rollback()
            raise
        await conn.commit()


async def migrate(conn: aiosqlite.Connection, component: str, migrations: Sequence[str]) -> int:
    """Apply the migrations of `component` not yet applied, in order; return its schema version."""
    await conn.execute(
        "CREATE TABLE IF NOT EXISTS schema_versions (component TEXT PRIMARY KEY, version INTEGER)"
    )
    row = await fetch_one(
        conn, "SELECT version FROM schema_versions WHERE component = ?", (component,)
    )
    current = int(row[0]) if row else 0
    if current > len(migrations):
        raise RuntimeError(
            f"database schema for {component} is version {current}, newer than this crabbot "
            f"({len(migrations)}): upgrade crabbot"
        )
    for version in range(current + 1, len(migrations) + 1):
        await conn.executescript(
            "BEGIN;\n"
            + migrations[version - 1]
            + f"\nINSERT INTO schema_versions VALUES ('{component}', {version})"
            " ON CONFLICT(component) DO UPDATE SET version = excluded.version;\nCOMMIT;"
        )
    return len(migrations)
