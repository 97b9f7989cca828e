"""The PostgreSQL backend (asyncpg, picked by scripts/bench_db_driver.py): a bounded pool of
connections per process; a transaction holds one of them for the task that opened it. SQL is
written once with `?` placeholders and translated here, once per statement."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import re
import socket
import zlib
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from contextvars import ContextVar
from typing import Any, NoReturn

import asyncpg

from router.config import ConfigError
from router.store.database import Database, DatabaseError, OperationalError, Row, scrub

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 10.0
# A database host that drops off the network (a partition, a power cut) sends no reset: a query
# would wait for TCP to give up retransmitting, about 15 minutes on Linux, and a bot's reply with
# it. Data unacknowledged this long closes the connection (an error the caller degrades on), and
# idle or waiting connections are probed as often, so a dead peer is found there too. A live
# server's kernel acknowledges the probes, so a slow query is not cut; a batch the server stops
# reading for this long (blocked on a lock, its receive window full) is, and is retried.
DEAD_PEER_S = 10
CLOSE_TIMEOUT_S = 5.0
# SQLSTATE classes that may pass: connection, transaction rollback (deadlock, serialization),
# insufficient resources, object in use / lock not available, operator intervention, system.
TRANSIENT = ("08", "40", "53", "55", "57", "58")
MIGRATION_LOCK = zlib.crc32(b"crabbot migrations")
SQL_FUNCTIONS = {
    # NULL outside years 1-9999, as SQLite's strftime (a time in milliseconds, Inf).
    "utc_day": "CASE WHEN {0} BETWEEN -62135596800 AND 253402300799"
    " THEN to_char(to_timestamp({0}) AT TIME ZONE 'UTC', 'YYYY-MM-DD') END",
    "unindexed": "{0}",
}
_TOKENS = re.compile(r"'(?:[^']|'')*'|\"[^\"]*\"|--[^\n]*|\?|INSERT\s+OR\s+IGNORE\s+INTO", re.I)
_RETURNING = re.compile(r"\s+RETURNING\s", re.I)


@functools.lru_cache(maxsize=1024)
def translate(sql: str) -> str:
    """SQLite's spelling as PostgreSQL's: `?` -> `$n` (outside quotes and comments), and
    `INSERT OR IGNORE INTO` -> `INSERT INTO ... ON CONFLICT DO NOTHING`."""
    count = 0
    ignore = False

    def replace(match: re.Match[str]) -> str:
        nonlocal count, ignore
        token = match.group(0)
        if token == "?":
            count += 1
            return f"${count}"
        if token[0] in "'\"-":
            return token
        ignore = True
        return "INSERT INTO"

    out = _TOKENS.sub(replace, sql)
    if ignore:
        returning = _RETURNING.search(out)
        at = returning.start() if returning else len(out.rstrip().rstrip(";"))
        out = f"{out[:at]} ON CONFLICT DO NOTHING{out[at:]}"
    return out


def _raise(exc: BaseException) -> NoReturn:
    """asyncpg's errors as the seam's, without any password they might quote."""
    message = scrub(str(exc)) or type(exc).__name__
    transient = isinstance(exc, OSError | TimeoutError) or (
        isinstance(exc, asyncpg.InterfaceError) and not isinstance(exc, ValueError)
    )
    if isinstance(exc, asyncpg.PostgresError):
        transient = str(getattr(exc, "sqlstate", "") or "")[:2] in TRANSIENT
    raise (OperationalError if transient else DatabaseError)(message) from None


_ERRORS = (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError)


def _rowcount(status: str) -> int:
    last = status.rsplit(" ", 1)[-1]
    return int(last) if last.isdigit() else 0


def _notice_dead_peer(conn: asyncpg.Connection) -> None:
    """TCP keepalives and a user timeout on a connection's socket (none on a Unix socket, whose
    peer cannot vanish without its end closing). asyncpg has no setting for them (its issue
    #606), so the transport's socket is set directly."""
    transport = getattr(conn, "_transport", None)
    sock = transport.get_extra_info("socket") if transport is not None else None
    if sock is None or sock.family not in (socket.AF_INET, socket.AF_INET6):
        return
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    tcp_options = {
        "TCP_KEEPIDLE": DEAD_PEER_S // 2,
        "TCP_KEEPINTVL": DEAD_PEER_S // 4,
        "TCP_KEEPCNT": 3,
        "TCP_USER_TIMEOUT": DEAD_PEER_S * 1000,  # milliseconds
    }
    for name, value in tcp_options.items():
        if hasattr(socket, name):  # Linux has them all; other systems some
            sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, name), value)


async def _setup(conn: asyncpg.Connection) -> None:
    _notice_dead_peer(conn)
    # SUM over integers is numeric in PostgreSQL: read it as a float, like SQLite's numbers.
    await conn.set_type_codec(
        "numeric", encoder=str, decoder=float, schema="pg_catalog", format="text"
    )
    # A text value cannot hold NUL in PostgreSQL (SQLite's can): a message with one would be
    # refused whole, and its exchange or log row lost.
    await conn.set_type_codec(
        "text", encoder=_storable_text, decoder=str, schema="pg_catalog", format="text"
    )


def _storable_text(text: str) -> str:
    """The text with each NUL as U+FFFD, as a UTF-8 decoder shows a byte it cannot read."""
    return text.replace("\x00", "\ufffd") if "\x00" in text else text


class PostgresDatabase(Database):
    dialect = "postgresql"

    def __init__(self, pool: asyncpg.Pool, url: str) -> None:
        self._pool = pool
        self._url = url
        self._held: ContextVar[asyncpg.Connection | None] = ContextVar(
            f"pg-held-{id(self)}", default=None
        )
        self._in_transaction: ContextVar[bool] = ContextVar(f"pg-tx-{id(self)}", default=False)
        self._listener: asyncpg.Connection | None = None

    def __repr__(self) -> str:
        return f"PostgresDatabase({scrub(self._url)})"

    @classmethod
    async def open(cls, url: str, pool_size: int) -> PostgresDatabase:
        """A pool of at most `pool_size` connections; a server that cannot be reached is one
        line that says what to do (ConfigError), never a traceback."""
        try:
            pool = await asyncpg.create_pool(
                url,
                min_size=1,
                max_size=pool_size,
                init=_setup,
                timeout=CONNECT_TIMEOUT_S,
                command_timeout=None,
            )
        except (*_ERRORS, ValueError) as exc:
            reason = scrub(str(exc)).splitlines()[0] if str(exc) else type(exc).__name__
            raise ConfigError(
                f"database {scrub(url)}: cannot connect ({reason}); start PostgreSQL or fix"
                " [database] url / CRABBOT_DATABASE_URL (a password: PGPASSWORD)"
            ) from None
        return cls(pool, url)

    async def execute(self, sql: str, parameters: Sequence[Any] = ()) -> int:
        async with self._holding() as conn:
            try:
                return _rowcount(await conn.execute(translate(sql), *parameters))
            except _ERRORS as exc:
                _raise(exc)

    async def execute_many(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        async with self._holding() as conn:
            try:
                await conn.executemany(translate(sql), list(rows))
            except _ERRORS as exc:
                _raise(exc)

    async def fetch_all(self, sql: str, parameters: Sequence[Any] = ()) -> list[Row]:
        async with self._holding() as conn:
            try:
                return list(await conn.fetch(translate(sql), *parameters))
            except _ERRORS as exc:
                _raise(exc)

    @asynccontextmanager
    async def _holding(self) -> AsyncIterator[asyncpg.Connection]:
        """This task's connection: the one it holds already, else one from the pool."""
        held = self._held.get()
        if held is not None:
            yield held
            return
        try:
            conn = await self._pool.acquire()
        except _ERRORS as exc:
            _raise(exc)
        token = self._held.set(conn)
        try:
            yield conn
        finally:
            self._held.reset(token)
            await self._release(conn)

    async def _release(self, conn: asyncpg.Connection) -> None:
        """Give a connection back. One that dies on the way (the server restarted after the
        work was committed or had failed) is closed by asyncpg and replaced at the next
        acquire: the work's own outcome stands, and the caller goes on."""
        try:
            await self._pool.release(conn)
        except _ERRORS as exc:
            log.warning(
                "PostgreSQL: a connection was lost as it went back to the pool (%s)",
                scrub(str(exc)) or type(exc).__name__,
            )

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Database]:
        if self._in_transaction.get():
            yield self
            return
        async with self._holding() as conn:
            tx = conn.transaction()
            try:
                await tx.start()
            except _ERRORS as exc:
                _raise(exc)
            token = self._in_transaction.set(True)
            try:
                yield self
            except BaseException:
                with contextlib.suppress(*_ERRORS):  # a lost connection: so is the transaction
                    await tx.rollback()
                raise
            else:
                try:
                    await tx.commit()
                except _ERRORS as exc:
                    _raise(exc)
            finally:
                self._in_transaction.reset(token)

    @asynccontextmanager
    async def migration_lock(self) -> AsyncIterator[Database]:
        async with self._holding() as conn:
            try:
                await conn.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK)
            except _ERRORS as exc:
                _raise(exc)
            try:
                yield self
            finally:
                with contextlib.suppress(*_ERRORS):  # a lost connection released it
                    await conn.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK)

    async def run_script(self, script: str) -> None:
        async with self._holding() as conn:
            try:
                async with conn.transaction():
                    await conn.execute(script)
            except _ERRORS as exc:
                _raise(exc)

    async def writer(self) -> Database:
        return self  # the pool serves the writers too

    async def listen(self, channel: str, callback: Callable[[str], None]) -> None:
        # LISTEN needs a connection of its own, outside the pool, for as long as it listens.
        try:
            if self._listener is None:
                self._listener = await asyncpg.connect(self._url, timeout=CONNECT_TIMEOUT_S)
            await self._listener.add_listener(
                channel, lambda _conn, _pid, _channel, payload: callback(str(payload))
            )
        except _ERRORS as exc:
            _raise(exc)

    async def notify(self, channel: str, payload: str) -> None:
        await self.execute("SELECT pg_notify(?, ?)", (channel, payload))

    def sql_function(self, name: str, *arguments: str) -> str:
        return SQL_FUNCTIONS[name].format(*arguments)

    async def erase_traces(self) -> None:
        """Nothing to do: no WAL file of ours to empty (PostgreSQL reclaims the deleted rows'
        space by its own vacuum)."""

    async def close(self) -> None:
        if self._listener is not None:
            await self._listener.close(timeout=CLOSE_TIMEOUT_S)
            self._listener = None
        try:
            await asyncio.wait_for(self._pool.close(), CLOSE_TIMEOUT_S)
        except _ERRORS:  # a connection still busy, or the server gone: close them hard
            self._pool.terminate()
