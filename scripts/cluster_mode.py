"""The routing mode changed the way `/routing mode` changes it: stored through crabbot's own
storage layer for every process on the database, from a host that runs no proxy (as a bot
sharing the database would)."""

from __future__ import annotations

from router.counters import Counters
from router.store.database import connect
from router.store.settings import StoredMode
from router.taxonomy import as_mode


async def change_mode(database: str, mode: str) -> str:
    """Store `mode` in `database` (an SQLite path or a PostgreSQL URL); return the old mode."""
    if database.startswith(("postgresql://", "postgres://")):
        raise NotImplementedError("PostgreSQL storage has not landed on this branch yet")
    conn = await connect(database)
    try:
        current = await StoredMode.read(conn, "shadow")
        new = as_mode(mode)
        if new is None:
            raise ValueError(f"not a routing mode: {mode}")
        return await StoredMode(conn, current, Counters()).set(new)
    finally:
        await conn.close()
