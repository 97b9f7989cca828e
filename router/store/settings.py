"""The settings table: small named values shared by every process on the database (the routing
mode, the local classifier's calibration)."""

from __future__ import annotations

import logging
import time

from router.counters import Counters
from router.store.database import Database, DatabaseError
from router.taxonomy import MODES, Mode, as_mode

log = logging.getLogger(__name__)


async def get_setting(conn: Database, key: str) -> str | None:
    row = await conn.fetch_one("SELECT value FROM settings WHERE key = ?", (key,))
    return str(row[0]) if row else None


SET_SQL = (
    "INSERT INTO settings (key, value, updated_at) VALUES (?, ?, ?)"
    " ON CONFLICT(key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at"
)


async def set_setting(conn: Database, key: str, value: str) -> None:
    async with conn.transaction():
        await conn.execute(SET_SQL, (key, value, time.time()))


MODE_KEY = "routing_mode"
MODE_RECHECK_S = 2.0  # another process (bot or proxy) sharing the database may change the mode
MODE_CHANNEL = "crabbot_mode"  # NOTIFY'd with the new mode when it is stored


class StoredMode:
    """The routing mode every process on the database shares: read at start, written by
    `/routing mode` (and NOTIFY'd); re-read when the last read is older than MODE_RECHECK_S,
    unless the changes are `pushed` (PostgreSQL's LISTEN, router/cluster/): then never on
    the way of a request."""

    def __init__(self, conn: Database, mode: Mode, counters: Counters) -> None:
        self.conn = conn
        self.value: Mode = mode
        self.counters = counters
        self._checked_at = time.monotonic()
        self.pushed = False

    @staticmethod
    async def read(conn: Database, initial: Mode) -> Mode:
        """The stored mode; `initial` (config's) is stored when none is."""
        stored = as_mode(await get_setting(conn, MODE_KEY))
        if stored is None:
            stored = initial
            await set_setting(conn, MODE_KEY, stored)
        return stored

    async def refresh(self, max_age_s: float | None = None) -> Mode:
        max_age_s = MODE_RECHECK_S if max_age_s is None else max_age_s
        if not self.pushed and time.monotonic() - self._checked_at >= max_age_s:
            self._checked_at = time.monotonic()
            try:
                stored = as_mode(await get_setting(self.conn, MODE_KEY))
            except DatabaseError:
                log.exception("could not read the stored routing mode")
                self.counters["db_errors"] += 1
                stored = None
            if stored is not None:
                self.heard(stored)
        return self.value

    def heard(self, value: str) -> None:
        """The stored mode, as another process set it (or as read again)."""
        mode = as_mode(value)
        if mode is not None and mode != self.value:
            log.info("routing mode is now %s (changed by another process)", mode)
            self.value = mode

    async def reread(self) -> None:
        """Read the stored mode now (after LISTEN reconnected: changes meanwhile were missed)."""
        self._checked_at = -MODE_RECHECK_S
        pushed, self.pushed = self.pushed, False
        try:
            await self.refresh()
        finally:
            self.pushed = pushed

    async def set(self, value: str) -> Mode:
        """Store a new mode for every conversation; return the old one."""
        mode = as_mode(value)
        if mode is None:
            raise ValueError(f"mode must be one of {', '.join(MODES)}")
        old = self.value
        async with self.conn.transaction():  # on PostgreSQL, the NOTIFY goes out at the commit
            await set_setting(self.conn, MODE_KEY, mode)
            await self.conn.notify(MODE_CHANNEL, mode)
        self.value = mode
        self._checked_at = time.monotonic()
        log.info("routing mode changed from %s to %s", old, mode)
        return old
