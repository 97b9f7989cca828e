"""NOTIFY without waiting: notifications are queued (`put` never blocks) and sent in batches by
one background task, a round trip a batch, so a slow or restarting PostgreSQL delays no answer;
past a bound, or when the database refuses a batch (or its driver fails in a way nobody mapped),
they are dropped and counted."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict

from router.counters import Counters
from router.store.database import Database, DatabaseError

log = logging.getLogger(__name__)

MAX_PENDING = 5_000  # notifications waiting to be sent; further ones are dropped
MAX_PAYLOAD = 7_900  # bytes: PostgreSQL refuses a payload of 8000 or more
BATCH = 256
SEND_SQL = "SELECT count(pg_notify(?, payload)) FROM unnest(?::text[]) AS payload"


class Notifier:
    """Sends (channel, payload) notifications behind the caller; one per process."""

    def __init__(self, db: Database, counters: Counters) -> None:
        self.db = db
        self.counters = counters
        self._pending: list[tuple[str, str]] = []
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._task: asyncio.Task[None] | None = None
        self._closing = False

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="notifier")

    def put(self, channel: str, payload: str) -> None:
        if len(payload.encode()) > MAX_PAYLOAD:
            self._drop("too_long", 1)
            return
        if len(self._pending) >= MAX_PENDING:
            self._drop("queue_full", 1)
            return
        self._pending.append((channel, payload))
        self._idle.clear()
        self._wake.set()

    async def flush(self, timeout_s: float) -> bool:
        """Wait until every notification queued so far is sent or dropped."""
        try:
            await asyncio.wait_for(self._idle.wait(), timeout_s)
        except TimeoutError:
            return False
        return True

    async def close(self) -> None:
        self._closing = True
        self._wake.set()
        if self._task is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._task), 5.0)
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._pending:
                batch, self._pending = self._pending[:BATCH], self._pending[BATCH:]
                await self._send(batch)
            self._idle.set()
            if self._closing:
                return

    async def _send(self, batch: list[tuple[str, str]]) -> None:
        by_channel: defaultdict[str, list[str]] = defaultdict(list)
        for channel, payload in batch:
            by_channel[channel].append(payload)
        for channel, payloads in by_channel.items():
            try:
                await self.db.execute(SEND_SQL, (channel, payloads))
            except DatabaseError as exc:
                self._drop("db_error", len(payloads))
                if self.counters["notify_dropped_db_error"] <= len(payloads):
                    log.warning("NOTIFY %s: %d dropped (%s)", channel, len(payloads), exc)
            except Exception:  # a driver's surprise must not end the task and strand the rest
                self._drop("error", len(payloads))
                if self.counters["notify_dropped_error"] <= len(payloads):
                    log.exception("NOTIFY %s: %d dropped", channel, len(payloads))

    def _drop(self, reason: str, n: int) -> None:
        self.counters[f"notify_dropped_{reason}"] += n
