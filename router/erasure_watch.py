"""Erasures another process on the database made reach this one's memory: on SQLite read from
their notices before a request, at most every RECHECK_S (on PostgreSQL heard, router/cluster/)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Coroutine

from router.context import ConversationContext
from router.counters import Counters
from router.store.database import Database, DatabaseError
from router.store.erasure_notices import NOTICE_KEEP_S, Notice, notices_after

log = logging.getLogger(__name__)

RECHECK_S = 2.0
Heed = Callable[[list[Notice]], Coroutine[None, None, None]]


class ErasureWatch:
    """Reads the notices this process has neither made nor read; its routing context lets go
    of their turns at once, and `heed` (the stored rows, the pool) follows in the background."""

    def __init__(
        self, conn: Database, context: ConversationContext, counters: Counters, heed: Heed
    ) -> None:
        self.conn = conn
        self.context = context
        self.counters = counters
        self.heed = heed
        self.seen = 0  # the newest notice read
        self.mine: set[int] = set()  # notices of this process's own erasures, not yet read
        self.pushed = False  # PostgreSQL: erasures are heard, never read on a request's way
        self._checked_at = time.monotonic()
        self._waiting: list[Notice] | None = None  # for `heed`; [] after a possible miss
        self._task: asyncio.Task[None] | None = None
        self.also: list[Heed] = []  # what else keeps copies (the bot's memory)

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
        idle_s = time.monotonic() - self._checked_at
        if self.pushed or idle_s < (RECHECK_S if max_age_s is None else max_age_s):
            return
        # Idle for half the time notices are kept: some may be cleared before they are read.
        await self._read(missed_some=idle_s > NOTICE_KEEP_S / 2)

    async def catch_up(self, since: float) -> None:
        """Apply the notices left from `since` on, heard or not (PostgreSQL, after a lost
        connection: what was sent meanwhile is gone)."""
        await self._read(since=since)

    def heard(self, notice: Notice) -> None:
        """Another process's erasure, heard (PostgreSQL): its rows still queued here go too."""
        self.counters["erasures_heard"] += 1
        self._heed([notice])

    async def _read(self, missed_some: bool = False, since: float | None = None) -> None:
        self._checked_at = time.monotonic()
        try:
            notices = await notices_after(self.conn, self.seen)
        except DatabaseError:
            log.exception("could not read the erasure notices")
            self.counters["db_errors"] += 1
            return
        if notices:
            self.seen = notices[-1].id
        theirs = [n for n in notices if n.id not in self.mine and (since is None or n.at >= since)]
        self.mine = {notice for notice in self.mine if notice > self.seen}
        if missed_some:
            log.info("no request for hours: the routing context starts over")
            self.context.drop(None, None, publish=False)
        for notice in theirs:
            self.context.drop(notice.conv_key, notice.user_key, publish=False, before=notice.at)
        if theirs:
            self.counters["erasures_heard"] += len(theirs)
            log.info("%d erasures by another process reach this one's memory", len(theirs))
        if theirs or missed_some:
            self._heed(theirs)

    def _heed(self, notices: list[Notice]) -> None:
        self._waiting = (self._waiting or []) + notices
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._heed_all(), name="erasures")

    async def _heed_all(self) -> None:
        while self._waiting is not None:
            notices, self._waiting = self._waiting, None
            for heed in (self.heed, *self.also):
                try:
                    await heed(notices)
                except DatabaseError:
                    log.exception("could not apply another process's erasure to stored rows")
                    self.counters["db_errors"] += 1

    async def settled(self) -> None:
        """Until what the notices read so far erased has left this process."""
        if self._task is not None:
            await self._task

    async def close(self) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
