"""A PostgreSQL LISTEN that outlives its connection: a connection of its own listens on the
channels; a lost one (PostgreSQL restarted, a network cut) is noticed by asyncpg's termination
callback or a failed ping, logged, counted by reason and replaced with backoff, and after each
(re)connect `on_connected` lets the owner catch up (notifications sent meanwhile are lost)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import asyncpg

from router.counters import Counters
from router.store.database import scrub

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 5.0
RECONNECT_S = (0.1, 0.25, 0.5, 1.0, 2.0, 5.0)  # waits between attempts, the last repeated
PING_S = 5.0  # a connection cut without a word (a host gone) is noticed this often
PING_TIMEOUT_S = 3.0
# InternalClientError: asyncpg's word for a connection left mid-query (a timed-out query's).
ERRORS = (
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
    OSError,
    TimeoutError,
)

Notify = Callable[[str, str], None]  # (channel, payload)


class PgListener:
    """LISTEN on `channels`, calling `on_notify(channel, payload)` for each notification of any
    process; `on_connected()` after each connect; advisory locks on the same connection (a
    lost connection releases them, as it should: another process takes over)."""

    def __init__(
        self,
        url: str,
        channels: Sequence[str],
        on_notify: Notify,
        on_connected: Callable[[], Awaitable[None]],
        counters: Counters,
        on_lost: Callable[[], None] | None = None,
    ) -> None:
        self.url = url
        self.on_lost = on_lost
        self.channels = tuple(channels)
        self.on_notify = on_notify
        self.on_connected = on_connected
        self.counters = counters
        self.connected = asyncio.Event()  # set while LISTENing
        self._conn: asyncpg.Connection | None = None
        self._lost = asyncio.Event()
        self._busy = asyncio.Lock()  # one query at a time on the connection
        self._task: asyncio.Task[None] | None = None
        self._closing = False

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="pg-listener")

    async def close(self) -> None:
        self._closing = True
        self._lost.set()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._drop_connection()

    async def try_lock(self, key: int) -> bool | None:
        """pg_try_advisory_lock on the listening connection; False when another process holds
        it, None when there is no connection to ask on."""
        result = await self._query("SELECT pg_try_advisory_lock($1)", key)
        return None if result is None else bool(result)

    async def unlock(self, key: int) -> None:
        await self._query("SELECT pg_advisory_unlock($1)", key)

    async def _query(self, sql: str, *arguments: Any) -> Any:
        async with self._busy:
            # Read under the lock: a query that waited on it must not run on a connection the
            # one before it lost (a timed-out query leaves it in no state to take another).
            conn = self._conn
            if conn is None or not self.connected.is_set() or self._lost.is_set():
                return None
            try:
                return await conn.fetchval(sql, *arguments, timeout=PING_TIMEOUT_S)
            except ERRORS as exc:
                self._lose("query", exc)
                return None

    async def _run(self) -> None:
        attempt = 0
        while not self._closing:
            try:
                await self._connect()
            except ERRORS as exc:
                self.counters["listen_connect_failed"] += 1
                if attempt == 0 or not attempt % 20:
                    log.warning("LISTEN: cannot connect (%s); retrying", _reason(exc))
                await asyncio.sleep(RECONNECT_S[min(attempt, len(RECONNECT_S) - 1)])
                attempt += 1
                continue
            if attempt:
                log.info("LISTEN: connected again after %d attempts", attempt)
            attempt = 0
            await self._watch()
            self.connected.clear()
            await self._drop_connection()

    async def _connect(self) -> None:
        self._lost.clear()
        conn = await asyncpg.connect(self.url, timeout=CONNECT_TIMEOUT_S)
        try:
            conn.add_termination_listener(lambda _conn: self._lose("terminated", None))
            for channel in self.channels:
                await conn.add_listener(channel, self._dispatch)
        except BaseException:
            conn.terminate()
            raise
        self._conn = conn
        self.connected.set()
        try:
            await self.on_connected()
        except Exception:  # the owner's catch-up failed: it logged why; keep listening
            log.exception("LISTEN: catching up after connecting failed")

    async def _watch(self) -> None:
        """Until the connection is lost: a ping every PING_S."""
        while not self._lost.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._lost.wait(), PING_S)
            if not self._lost.is_set():
                await self._query("SELECT 1")

    def _lose(self, reason: str, exc: BaseException | None) -> None:
        if self._lost.is_set() or self._closing:
            return
        self.counters[f"listen_lost_{reason}"] += 1
        log.warning(
            "LISTEN: connection lost (%s%s); reconnecting",
            reason,
            "" if exc is None else f": {_reason(exc)}",
        )
        self.connected.clear()
        self._lost.set()
        if self.on_lost is not None:
            self.on_lost()

    def _dispatch(self, _conn: object, _pid: int, channel: str, payload: object) -> None:
        try:
            self.on_notify(channel, str(payload))
        except Exception:  # one bad notification must not stop the others
            self.counters["shared_event_errors"] += 1
            log.exception("could not apply a notification on %s", channel)

    async def _drop_connection(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None and not conn.is_closed():
            try:
                await asyncio.wait_for(conn.close(), PING_TIMEOUT_S)
            except (*ERRORS, asyncio.CancelledError):
                conn.terminate()


def _reason(exc: BaseException) -> str:
    text = scrub(str(exc)).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
