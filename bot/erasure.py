"""Erasing what crabbot keeps of a conversation or a person wherever it keeps it: conversation
memory (and their words quoted in others' replies there), the routing log's prompt text, the
pool entries their messages taught, and the console's history file; and exporting what it keeps
of a conversation."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from bot.console_history import PrivateHistory, erase_file
from bot.memory import Memory
from router import ModelRouter
from router.cluster.shared_state import announce_erasure
from router.store import erasure
from router.store.database import Database
from router.store.erasure import Erased, Scope


async def forget(
    conn: Database,
    memory: Memory,
    scope: Scope,
    *,
    dry_run: bool = False,
    router: ModelRouter | None = None,
    history: PrivateHistory | Path | None = None,
) -> Erased:
    """Erase (or with `dry_run` count) the scope's data. A running `router` also lets go of what
    it holds in memory (pool entries, context), as do, told of it, the other processes on the
    database; `history` is the console's, when it is theirs."""
    if router is not None and not dry_run:  # its requests under way keep nothing of it
        router.forgetting(scope)
    # Memory first: a process told of the erasure must not read the words back from it.
    messages, quotes = await memory.forget(scope.conv_key, scope.user_key, dry_run)
    if router is not None:
        erased = await router.erase(scope, dry_run)  # the WAL checkpointed there
    elif dry_run:
        erased = await erasure.count(conn, scope)
    else:
        done = await erasure.erase(conn, scope)
        erased = done.erased
        # The bots and proxies running on the database let go of their copies too.
        await announce_erasure(conn, scope, done.pool_hashes)
        await conn.erase_traces()
    lines = 0
    if isinstance(history, PrivateHistory):
        lines = erase_file(history.path, dry_run=True) if dry_run else history.forget()
    elif history is not None:
        lines = erase_file(history, dry_run)
    return replace(erased, messages=messages, history_lines=lines, quotes=quotes)


async def export(conn: Database, memory: Memory, conv_key: str) -> list[dict[str, Any]]:
    """Every row kept about a conversation: its memory, its routing log, its pool entries."""
    return await memory.export(conv_key) + await erasure.export_rows(conn, conv_key)
