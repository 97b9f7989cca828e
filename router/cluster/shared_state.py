"""Many processes on one PostgreSQL act as one router. Each LISTENs (router/store/pg_listener.py)
and NOTIFYs behind its answers (router/store/notifier.py):

- the mode: stored and NOTIFY'd in one transaction; a process sets what it hears, and reads it
  again after each reconnect, so routing never reads it on the way of a request;
- learned labels: once a pool row is committed its process NOTIFYs; the others read the rows
  after the last one they hold (also after a reconnect) into their pool and index;
- the fit: the process that gets the fit's advisory lock fits (a refit, or a start that found
  no fit stored for its pool) and stores it, the others load it when their pool matches its
  fingerprint (a start waits for it: router/fitting.py);
- context: each routed turn (task, time, text as far as prompts are kept, vector) and each
  reset or erasure is published; the turns heard are kept in memory, and a process starting
  reads the latest from the log; no request reads the database.

On SQLite (one host) nothing of this runs: the processes on one file re-read the mode and read
a conversation's last turn from the log as before."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
import zlib
from collections.abc import Callable
from typing import TYPE_CHECKING

from router.cluster.messages import (
    decode_scope,
    decode_turn,
    decode_unpool,
    encode_scope,
    encode_turn,
    encode_unpool,
)
from router.pool.pool import rows_after
from router.signals.continuity import PreviousTurn, routed_turn
from router.store import database as store
from router.store import routing_log
from router.store.database import Database, DatabaseError
from router.store.erasure import Scope
from router.store.erasure_notices import Notice
from router.store.notifier import Notifier
from router.store.pg_listener import PgListener
from router.store.settings import MODE_CHANNEL

if TYPE_CHECKING:
    import numpy as np

    from router.router import ModelRouter

log = logging.getLogger(__name__)

TURN_CHANNEL = "crabbot_turn"
SCOPE_CHANNEL = "crabbot_context"  # resets and erasures
POOL_CHANNEL = "crabbot_pool"
UNPOOL_CHANNEL = "crabbot_unpool"  # pool entries an erasure removed
FIT_CHANNEL = "crabbot_fitted"
REFIT_LOCK = zlib.crc32(b"crabbot refit")
CATCH_UP_ROWS = 1_000  # pool rows read a query
CONTEXT_ROWS = 10_000  # the latest turns read from the log at start (memory keeps as many)
RECONNECT_MARGIN_S = 5.0  # after a reconnect: turns from a little before the loss
CONNECT_WAIT_S = 5.0  # a start waits this long for the first LISTEN (then goes on without)


class SharedState:
    """One per router on PostgreSQL; `start` wires it to the router's parts."""

    def __init__(self, router: ModelRouter, url: str) -> None:
        self.router = router
        self.sender = secrets.token_hex(4)  # this process, in what it sends
        counters = router.counters
        self.notifier = Notifier(router.conn, counters)
        channels = (
            *(MODE_CHANNEL, TURN_CHANNEL, SCOPE_CHANNEL),
            *(POOL_CHANNEL, UNPOOL_CHANNEL, FIT_CHANNEL),
        )
        self.listener = PgListener(
            url, channels, self._on_notify, self._on_connected, counters, self._lost
        )
        self._changed = asyncio.Event()
        self._pool_wanted = asyncio.Event()
        self._fit_wanted = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._lost_at: float | None = None  # when the last connection was lost
        self.connects = 0  # LISTEN connections made (a reconnect adds one)
        self._started = asyncio.Event()  # the first connect's catch-up is done
        self._holds_refit = False
        self.fits_heard = 0  # other processes' "a fit is stored"
        self._fits_seen = 0  # as many as had been heard before the last failed claim

    @classmethod
    async def start(cls, router: ModelRouter) -> SharedState | None:
        """Share this router's state with the other processes on its PostgreSQL; None (nothing
        to share across hosts) on SQLite."""
        if router.conn.dialect != "postgresql":
            return None
        url = store.database_url(router.config.database)  # the module's: tests stand one in
        assert url is not None
        shared = cls(router, url)
        router.stored_mode.pushed = True
        router.erasures.pushed = True
        router.context.read_log_on_miss = False
        router.context.publisher = shared
        if router.pool is not None:
            router.pool.on_written = shared._pool_written
        if router.fitting is not None:
            router.fitting.claim = shared
        shared.notifier.start()
        shared.listener.start()
        shared._tasks = [
            asyncio.create_task(shared._pool_loop(), name="shared-pool"),
            asyncio.create_task(shared._fit_loop(), name="shared-fit"),
        ]
        try:
            await asyncio.wait_for(shared._started.wait(), CONNECT_WAIT_S)
        except TimeoutError:
            log.warning("LISTEN is not connected yet: shared state follows once it is")
        return shared

    async def close(self) -> None:
        await self.notifier.close()
        await self.listener.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    @property
    def connected(self) -> bool:
        return self.listener.connected.is_set()

    async def until(self, predicate: Callable[[], bool], timeout_s: float) -> None:
        """Wait until `predicate()` holds, checked after each change heard from another
        process; TimeoutError past `timeout_s`."""
        async with asyncio.timeout(timeout_s):
            while True:
                changed = self._changed
                if predicate():
                    return
                await changed.wait()

    def _poke(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    # -- what this process tells the others (never waits) ----------------------------------

    def turn(self, conv_key: str, user_key: str | None, turn: PreviousTurn) -> None:
        embedder = self.router.embedder

        def vector_of(sent: PreviousTurn) -> np.ndarray | None:
            if sent.vector is not None or embedder is None:
                return sent.vector
            return embedder.cached(sent.text)

        behind = turn.task_behind
        vector, behind_vector = vector_of(turn), None if behind is None else vector_of(behind)
        keep_text = self.router.config.privacy.store_prompts
        payload = encode_turn(
            self.sender, conv_key, user_key, turn, vector, keep_text, behind_vector
        )
        if payload is None:
            self.router.counters["notify_dropped_too_long"] += 1
            return
        self.notifier.put(TURN_CHANNEL, payload)

    def reset(self, conv_key: str, at: float) -> None:
        self.notifier.put(SCOPE_CHANNEL, encode_scope(self.sender, "reset", conv_key, None, at))

    def drop(self, conv_key: str | None, user_key: str | None) -> None:
        payload = encode_scope(self.sender, "drop", conv_key, user_key, time.time())
        self.notifier.put(SCOPE_CHANNEL, payload)

    def unpool(self, hashes: set[str]) -> None:
        """An erasure removed these pool entries: from every process's pool too."""
        for payload in encode_unpool(self.sender, hashes):
            self.notifier.put(UNPOOL_CHANNEL, payload)

    def _pool_written(self, written: bool) -> None:
        if written:
            self.notifier.put(POOL_CHANNEL, self.sender)

    async def claim(self) -> bool:
        """Whether this process refits now: it holds the refit lock (or cannot ask: then it
        refits alone, as on one host)."""
        heard = self.fits_heard
        got = await self.listener.try_lock(REFIT_LOCK)
        self._holds_refit = got is True
        if got is False:
            self._fits_seen = heard
        return got is not False

    async def fit_stored(self, timeout_s: float) -> None:
        """Until another process says it stored a fit (since the last failed claim), or for
        `timeout_s` (its holder may have died: its lock went with its connection)."""
        seen = self._fits_seen
        with contextlib.suppress(TimeoutError):
            await self.until(lambda: self.fits_heard > seen, timeout_s)
        self._fits_seen = self.fits_heard

    async def release(self, refitted: bool) -> None:
        if self._holds_refit:
            self._holds_refit = False
            await self.listener.unlock(REFIT_LOCK)
        if refitted:
            self.notifier.put(FIT_CHANNEL, self.sender)

    # -- what the others tell it -----------------------------------------------------------

    def _on_notify(self, channel: str, payload: str) -> None:
        router = self.router
        if channel == MODE_CHANNEL:
            router.stored_mode.heard(payload)
        elif channel == TURN_CHANNEL:
            dim = router.embedder.dim if router.embedder is not None else 0
            heard = decode_turn(payload, dim)
            if heard.sender != self.sender:
                router.context.heard(heard.conv_key, heard.turn, heard.user_key)
        elif channel == SCOPE_CHANNEL:
            sender, kind, conv_key, user_key, at = decode_scope(payload)
            if sender == self.sender:
                return
            if kind == "reset" and conv_key is not None:
                router.context.heard_reset(conv_key, at)
            elif kind == "drop":
                router.context.drop(conv_key, user_key, publish=False)
                router.erasures.heard(Notice(0, at, conv_key, user_key))
        elif channel == POOL_CHANNEL and payload != self.sender:
            self._pool_wanted.set()
        elif channel == FIT_CHANNEL and payload != self.sender:
            self.fits_heard += 1
            self._fit_wanted.set()
        elif channel == UNPOOL_CHANNEL:
            sender, hashes = decode_unpool(payload)
            if sender != self.sender:
                self._tasks = [task for task in self._tasks if not task.done()]
                self._tasks.append(asyncio.create_task(self._unpool(hashes)))
        self._poke()

    async def _on_connected(self) -> None:
        """After each connect: what was missed meanwhile (the mode, pool rows, turns,
        erasures)."""
        router = self.router
        first = self.connects == 0
        self.connects += 1
        if not first:
            log.info("LISTEN: connected again; reading what changed meanwhile")
            await router.stored_mode.reread()
            self._pool_wanted.set()
        # At start, the latest turns whatever their age (memory holds as many); after a
        # reconnect, those since a little before the loss, and the erasures since then.
        since = 0.0 if first or self._lost_at is None else self._lost_at - RECONNECT_MARGIN_S
        if not first:
            await router.erasures.catch_up(since)
        try:
            await self._catch_up_context(since)
        except DatabaseError as exc:
            router.counters["db_errors"] += 1
            log.warning("could not read the recent turns: %s", exc)
        self._started.set()
        self._poke()

    def _lost(self) -> None:
        self._lost_at = time.time()
        self._poke()

    async def _catch_up_context(self, since: float) -> None:
        conn, context = self.router.conn, self.router.context
        for conv_key, at in await routing_log.resets_since(conn, since):
            context.heard_reset(str(conv_key), float(at))
        latest: dict[tuple[str, str | None], PreviousTurn] = {}
        rows = await routing_log.recent_turns(conn, since, CONTEXT_ROWS)
        for row in reversed(rows):  # oldest first, as they were routed: a reaction's task behind
            conv_key, user_key, category, at, text, confidence = tuple(row)
            key = (str(conv_key), None if user_key is None else str(user_key))
            turn = routed_turn(str(category), float(at), str(text), latest.get(key), confidence)
            latest[key] = turn
        for (conv_key, user_key), turn in latest.items():
            context.heard(conv_key, turn, user_key)

    async def _pool_loop(self) -> None:
        while True:
            await self._pool_wanted.wait()
            self._pool_wanted.clear()
            try:
                await self._catch_up_pool()
            except DatabaseError as exc:  # read again at the next notification or reconnect
                self.router.counters["db_errors"] += 1
                log.warning("could not read the pool's new rows: %s", exc)
            self._poke()

    async def _catch_up_pool(self) -> None:
        router, pool = self.router, self.router.pool
        if pool is None:
            return
        learned = 0
        while True:
            rows = await rows_after(router.conn, pool.embedder_id, pool.last_id, CATCH_UP_ROWS)
            for row in await pool.absorb(rows):
                learned += 1
                if row[5] is not None:
                    router.gate.heard(str(row[5]), float(row[6]))
            if len(rows) < CATCH_UP_ROWS:
                break
        if learned:
            router.counters["pool_rows_heard"] += learned
            log.info("%d labels learned by other processes joined the pool", learned)
            if router.fitting is not None:
                router.fitting.refit_if_grown()

    async def _unpool(self, hashes: set[str]) -> None:
        if await self.router.unpool(hashes):
            log.info("entries another process erased left the pool")
        self._poke()

    async def _fit_loop(self) -> None:
        while True:
            await self._fit_wanted.wait()
            self._fit_wanted.clear()
            fitting = self.router.fitting
            if fitting is None:
                continue
            try:
                if await fitting.adopt():
                    log.info("the classifier another process refit is loaded")
            except (DatabaseError, OSError, ValueError, KeyError) as exc:
                self.router.counters["db_errors"] += 1
                log.warning("could not load the classifier another process refit: %s", exc)
            self._poke()


async def announce_erasure(conn: Database, scope: Scope, pool_hashes: set[str]) -> None:
    """An erasure made outside the running processes (`crabbot forget`): on PostgreSQL they hear
    it as they hear each other's, and let go of their copies of what it erased."""
    if conn.dialect != "postgresql":
        return  # on SQLite they read its notice (router/erasure_watch.py)
    sender = f"cli-{secrets.token_hex(4)}"
    drop = encode_scope(sender, "drop", scope.conv_key, scope.user_key, time.time())
    payloads = [(SCOPE_CHANNEL, drop)]
    payloads += [(UNPOOL_CHANNEL, payload) for payload in encode_unpool(sender, pool_hashes)]
    try:
        for channel, payload in payloads:
            await conn.notify(channel, payload)
    except DatabaseError as exc:  # the erasure is made: they read its notice on reconnecting
        log.warning("could not tell the running processes of the erasure: %s", exc)
