"""The routing mode changed the way `/routing mode` changes it: stored through crabbot's own
storage layer for every process on the database, from a host that runs no proxy (as a bot
sharing the database would)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from router.counters import Counters
from router.store.settings import StoredMode
from router.taxonomy import as_mode


async def _open(database: str) -> Any:
    """crabbot's own connection to `database` (an SQLite path or a PostgreSQL URL)."""
    from router.config import DatabaseSettings
    from router.store import database as store

    if hasattr(store, "open_database"):  # the storage seam of PostgreSQL support
        if database.startswith(("postgresql://", "postgres://")):
            return await store.open_database(DatabaseSettings(url=database))
        return await store.open_database(DatabaseSettings(path=Path(database)))
    if database.startswith(("postgresql://", "postgres://")):
        raise NotImplementedError("this crabbot has no PostgreSQL storage")
    return await store.connect(database)


async def change_mode(database: str, mode: str) -> str:
    """Store `mode` in `database`; return the old mode."""
    new = as_mode(mode)
    if new is None:
        raise ValueError(f"not a routing mode: {mode}")
    conn = await _open(database)
    try:
        current = await StoredMode.read(conn, "shadow")
        return await StoredMode(conn, current, Counters()).set(new)
    finally:
        await conn.close()
