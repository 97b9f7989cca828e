"""Erasures made by another process on the same SQLite file (`crabbot forget` at a terminal, a
bot or proxy beside this one) reach this process's memory: read from their notices on the way of
a request, at most every RECHECK_S as the mode is, the routing context lets go of the turns they
erased and the pool of the entries no longer stored. On PostgreSQL they are heard instead
(router/cluster/)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Coroutine

from router.context import ConversationContext
from router.counters import Counters
from router.store.database import Database, DatabaseError
from router.store.erasure_notices import NOTICE_KEEP_S, notices_after

log = logging.getLogger(__name__)

RECHECK_S = 2.0


class ErasureWatch:
    """Reads the erasure notices this process has not made or seen, and applies them."""

    def __init__(
        self,
        conn: Database,
        context: ConversationContext,
        counters: Counters,
        resync_pool: Callable[[], Coroutine[None, None, None]],
    ) -> None:
        self.conn = conn
        self.context = context
        self.counters = counters
        self.resync_pool = resync_pool
        self.seen = 0  # the newest notice read
        self.mine: set[int] = set()  # notices of this process's own erasures, not yet read
        self.pushed = False  # PostgreSQL: erasures are heard, never read on a request's way
        self._checked_at = time.monotonic()
        self._resync: asyncio.Task[None] | None = None

    def start(self, seen: int) -> None:
        """Notices up to `seen` (the newest when the pool and context were read) are applied."""
        self.seen = seen
        self._checked_at = time.monotonic()

    def made(self, notice: int) -> None:
        """This process made the erasure behind `notice` (and applied it already)."""
        self.mine.add(notice)

    async def check(self, max_age_s: float | None = None) -> None:
        """Apply the notices left since the last check, when that is `max_age_s` (RECHECK_S)
        ago."""
        since = time.monotonic() - self._checked_at
        if self.pushed or since < (RECHECK_S if max_age_s is None else max_age_s):
            return
        await self._read(since)

    async def catch_up(self) -> None:
        """Apply the notices not yet read, heard or not (PostgreSQL, after a lost connection:
        what was sent meanwhile is gone)."""
        await self._read(since=0.0)

    async def _read(self, since: float) -> None:
        self._checked_at = time.monotonic()
        try:
            notices = await notices_after(self.conn, self.seen)
        except DatabaseError:
            log.exception("could not read the erasure notices")
            self.counters["db_errors"] += 1
            return
        # Idle longer than notices are kept: some may be gone unread, so every kept turn goes.
        missed = since > NOTICE_KEEP_S / 2
        theirs = [notice for notice in notices if notice.id not in self.mine]
        if notices:
            self.seen = notices[-1].id
            self.mine = {notice for notice in self.mine if notice > self.seen}
        if missed:
            self.context.drop(None, None, publish=False)
        for notice in theirs:
            self.context.drop(notice.conv_key, notice.user_key, publish=False, before=notice.at)
        if theirs or missed:
            self.counters["erasures_heard"] += len(theirs)
            log.info("%d erasures by another process reached this one's memory", len(theirs))
            self._resync = asyncio.create_task(self.resync_pool(), name="erasure-resync")

    async def settled(self) -> None:
        """Until the pool has let go of what the notices read so far erased."""
        if self._resync is not None:
            await self._resync

    async def close(self) -> None:
        if self._resync is not None and not self._resync.done():
            self._resync.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._resync
