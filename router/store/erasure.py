"""Erasing and exporting what the routing log and the pool keep of a conversation or a person:
prompt text cleared (the row stays, with its category, tier, tokens and cost, for stats), pool
entries taught by their messages deleted."""

from __future__ import annotations

import time
from dataclasses import astuple, dataclass
from typing import Any, NamedTuple

from router.store.database import Database
from router.store.erasure_notices import leave_notice

# The routing log's columns an export shows (no hashes, no process ids).
EXPORTED_LOG_COLUMNS = (
    "at",
    "user_key",
    "prompt",
    "prompt_chars",
    "mode",
    "category",
    "tier",
    "model",
    "source",
    "confidence",
    "outcome",
    "prompt_tokens",
    "completion_tokens",
)


@dataclass(frozen=True)
class Scope:
    """Whose data: a conversation, a person everywhere, or a person in one conversation."""

    conv_key: str | None = None
    user_key: str | None = None

    def __post_init__(self) -> None:
        if self.conv_key is None and self.user_key is None:
            raise ValueError("a scope names a conversation, a person or both")

    def where(self) -> tuple[str, tuple[str, ...]]:
        """The SQL condition (on tables with conv_key and user_key columns) and its values."""
        named = [(c, v) for c, v in (("conv_key", self.conv_key), ("user_key", self.user_key)) if v]
        return " AND ".join(f"{column} = ?" for column, _ in named), tuple(v for _, v in named)

    def covers(self, conv_key: str | None, user_key: str | None) -> bool:
        """Whether a row of this conversation and person is the scope's."""
        return (self.conv_key is None or conv_key == self.conv_key) and (
            self.user_key is None or user_key == self.user_key
        )

    def where_quarantined(self) -> tuple[str, tuple[str, ...]]:
        """The same on the quarantine, whose rows from before it kept owners name only their
        origin: a chat's is its conversation."""
        where, values = self.where()
        if self.user_key is not None or self.conv_key is None:
            return where, values
        return f"({where} OR (conv_key IS NULL AND origin = ?))", (*values, self.conv_key)


RECENT_KEPT_S = 3600.0  # longer than any request is routed, answered and streamed


class RecentErasures:
    """Erasures made or heard lately, with their times: a request asked before one and done
    after it (still routed, answered or streamed meanwhile) keeps nothing of the erased."""

    def __init__(self) -> None:
        self._erasures: list[tuple[Scope, float]] = []

    def add(self, scope: Scope, at: float) -> None:
        kept_since = time.time() - RECENT_KEPT_S
        self._erasures = [(s, when) for s, when in self._erasures if when > kept_since]
        self._erasures.append((scope, at))

    def since(
        self, at: float, conv_key: str | None, user_key: str | None, of_person: bool = False
    ) -> bool:
        """Whether this conversation's and person's data was erased at `at` or later; with
        `of_person`, by an erasure of a person (/forget), not only of a conversation (/reset)."""
        return any(
            when >= at and s.covers(conv_key, user_key) and not (of_person and s.user_key is None)
            for s, when in self._erasures
        )


@dataclass(frozen=True)
class Erased:
    """What was (or, in a dry run, would be) erased."""

    prompts: int = 0  # routing-log rows whose prompt text is cleared
    pool_entries: int = 0
    messages: int = 0  # conversation memory (the bot's)
    history_lines: int = 0  # the terminal's input history (the console's)
    quotes: int = 0  # the person's words quoted in others' questions in memory, cleared

    def empty(self) -> bool:
        return not any(astuple(self))

    def __add__(self, other: Erased) -> Erased:
        """Two erasures' counts together (one person known by two keys)."""
        return Erased(*(a + b for a, b in zip(astuple(self), astuple(other), strict=True)))

    def line(self, dry_run: bool = False) -> str:
        verb = "would erase" if dry_run else "erased"
        parts = [_counted(self.messages, "memory message")]
        if self.quotes:
            parts.append(_counted(self.quotes, "quote") + " in others' replies")
        parts += self._routing_parts()
        if self.history_lines:
            parts.append(
                _counted(self.history_lines, "console history entry", "console history entries")
            )
        return f"{verb} {', '.join(parts)}"

    def routing_line(self) -> str:
        """What a router alone keeps and erased (a proxy's: no memory, no console history)."""
        return f"erased {', '.join(self._routing_parts())}"

    def _routing_parts(self) -> list[str]:
        return [
            _counted(self.prompts, "routing-log prompt"),
            _counted(self.pool_entries, "pool entry", "pool entries"),
        ]


def _counted(n: int, one: str, many: str | None = None) -> str:
    return f"{n} {one if n == 1 else many or one + 's'}"


async def count(conn: Database, scope: Scope) -> Erased:
    where, values = scope.where()
    prompts = await conn.fetch_one(
        f"SELECT COUNT(*) FROM routing_log WHERE {where} AND (prompt != '' OR prompt_hash != '')",
        values,
    )
    pool = await conn.fetch_one(f"SELECT COUNT(*) FROM pool WHERE {where}", values)
    held, held_values = scope.where_quarantined()
    waiting = await conn.fetch_one(
        f"SELECT COUNT(*) FROM pool_quarantine WHERE {held}", held_values
    )
    pool_entries = sum(int(row[0]) for row in (pool, waiting) if row)
    return Erased(int(prompts[0]) if prompts else 0, pool_entries)


def up_to(
    where: str, values: tuple[str, ...], column: str, before: float | None
) -> tuple[str, tuple[str | float, ...]]:
    """A scope's SQL condition (`where`, `values`) narrowed to rows whose `column` is `before`
    or earlier (None: all of them)."""
    if before is None:
        return where, values
    return f"{where} AND {column} <= ?", (*values, before)


class Erasure(NamedTuple):
    """What an erasure did: the counts, the deleted pool entries' text hashes (a pool in memory
    lets go of them too) and the notice it left for the other processes on the database."""

    erased: Erased
    pool_hashes: set[str]
    notice: int


async def erase(conn: Database, scope: Scope) -> Erasure:
    """Clear the scope's prompt text and delete its pool entries, and leave a notice of it, in
    one transaction."""
    async with conn.transaction():
        erased, hashes = await erase_rows(conn, scope)
        notice = await leave_notice(conn, scope.conv_key, scope.user_key, time.time())
    return Erasure(erased, hashes, notice)


async def erase_rows(
    conn: Database, scope: Scope, before: float | None = None
) -> tuple[Erased, set[str]]:
    """Clear the scope's prompt text and delete its pool entries (`before`: only rows stored
    then or earlier, as another process's erasure did); return the counts and the deleted
    entries' text hashes."""
    pool_where, pool_values = up_to(*scope.where(), "added_at", before)
    log_where, log_values = up_to(*scope.where(), "at", before)
    held, held_values = up_to(*scope.where_quarantined(), "at", before)
    async with conn.transaction():
        rows = await conn.fetch_all(f"SELECT prompt_hash FROM pool WHERE {pool_where}", pool_values)
        hashes = {str(row[0]) for row in rows}
        pool = await conn.execute(f"DELETE FROM pool WHERE {pool_where}", pool_values)
        pool += await conn.execute(f"DELETE FROM pool_quarantine WHERE {held}", held_values)
        prompts = await conn.execute(
            f"UPDATE routing_log SET prompt = '', prompt_hash = '' WHERE {log_where}"
            " AND (prompt != '' OR prompt_hash != '')",
            log_values,
        )
    return Erased(prompts, pool), hashes


async def export_rows(conn: Database, conv_key: str) -> list[dict[str, Any]]:
    """What the routing log and the pool keep of a conversation, oldest first, one dict a row
    with its `kind` (no vectors, no hashes)."""
    log_rows = await conn.fetch_all(
        f"SELECT {', '.join(EXPORTED_LOG_COLUMNS)} FROM routing_log WHERE conv_key = ? ORDER BY id",
        (conv_key,),
    )
    pool_rows = await conn.fetch_all(
        "SELECT added_at, user_key, text, category, label_source, confidence FROM pool"
        " WHERE conv_key = ? ORDER BY id",
        (conv_key,),
    )
    return [{"kind": "routing_log", **dict(row)} for row in log_rows] + [
        {"kind": "pool", "at": row["added_at"], **{k: row[k] for k in list(row.keys())[1:]}}
        for row in pool_rows
    ]


PURGE_BATCH = 1000  # rows a transaction clears, so the log's writer never waits long


async def clear_old_prompts(conn: Database, before: float) -> int:
    """Retention: clear the prompt text of rows older than `before`; return how many."""
    cleared = 0
    while True:
        async with conn.transaction():
            done = await conn.execute(
                "UPDATE routing_log SET prompt = '', prompt_hash = '' WHERE id IN (SELECT id FROM"
                " routing_log WHERE at < ? AND (prompt != '' OR prompt_hash != '') LIMIT ?)",
                (before, PURGE_BATCH),
            )
        cleared += done
        if done < PURGE_BATCH:
            return cleared
