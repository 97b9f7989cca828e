"""Conversation memory: the last exchanges of each conversation in the `messages` table of the
one SQLite file, trimmed to a number of exchanges and an approximate token budget; each exchange
records whose it is, so a person's can be erased, and old ones are removed ([privacy]).
Exchanges are written behind the reply (a locked database delays no answer); until written they
are read from memory."""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import aiosqlite

from bot.config import MemorySettings
from router.store.database import fetch_one, migrate, transaction
from router.store.write_behind import Job, JobWriter
from router.text import capped

BOT_MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE messages (
        id INTEGER PRIMARY KEY,
        conv_key TEXT NOT NULL,
        at REAL NOT NULL,
        role TEXT NOT NULL CHECK (role IN ('user', 'assistant')),
        author TEXT,
        content TEXT NOT NULL
    );
    CREATE INDEX messages_conv ON messages (conv_key, id);
    """,
    # Whose exchange (platform:user id, on the question and its answer): /forget erases it.
    """
    ALTER TABLE messages ADD COLUMN user_key TEXT;
    CREATE INDEX messages_user ON messages (user_key) WHERE user_key IS NOT NULL;
    CREATE INDEX messages_at ON messages (at);
    """,
)


def estimate_tokens(text: str) -> int:
    """A rough token count: a CJK character is about one token, other text about four
    characters a token. Good enough for a budget; no tokenizer download."""
    wide = sum(1 for ch in text if ord(ch) >= 0x2E80)
    return wide + (len(text) - wide + 3) // 4 + 1


@dataclass(frozen=True)
class Turn:
    role: str
    content: str
    author: str | None = None


class Memory:
    """Per-conversation history. A turn is one message, the user's or the bot's; an exchange is
    a question and its answer, always stored together. `max_turns` counts exchanges, so the
    history never holds half of one."""

    def __init__(
        self, conn: aiosqlite.Connection, settings: MemorySettings, writer: JobWriter
    ) -> None:
        self.conn = conn
        self.settings = settings
        self.writer = writer
        # Exchanges queued and not yet written, by conversation, oldest first.
        self._unwritten: dict[str, list[tuple[Turn, Turn]]] = {}
        self._clearing: Counter[str] = Counter()  # /reset deletes queued, by conversation

    @classmethod
    async def open(
        cls,
        conn: aiosqlite.Connection,
        settings: MemorySettings,
        path: Path | str = ":memory:",
        counters: Counter[str] | None = None,
    ) -> Memory:
        """Migrate and start the writer (its own connection; an in-memory database's is `conn`).
        Its failures are counted on `counters` (memory_write_errors, memory_rows_dropped)."""
        await migrate(conn, "bot", BOT_MIGRATIONS)
        counters = counters if counters is not None else Counter()
        writer = JobWriter(path, counters, "memory", "memory")
        await writer.start(conn if str(path) == ":memory:" else None)
        return cls(conn, settings, writer)

    async def close(self) -> None:
        """Write what is queued (see LogWriter.close), then stop the writer."""
        await self.writer.close()

    async def flush(self, timeout_s: float | None = None) -> bool:
        return await self.writer.flush(timeout_s)

    @property
    def max_messages(self) -> int:
        """max_turns counts exchanges: two messages each."""
        return 2 * self.settings.max_turns

    async def history(self, conv_key: str) -> list[Turn]:
        """The newest whole exchanges, oldest first, within max_turns and the token budget."""
        if self.settings.max_turns == 0:
            return []
        rows = await self.conn.execute_fetchall(
            "SELECT role, content, author FROM messages WHERE conv_key = ?"
            " ORDER BY id DESC LIMIT ?",
            (conv_key, self.max_messages),
        )
        cleared = conv_key in self._clearing  # the rows read are about to be deleted
        newest = [] if cleared else [Turn(row[0], row[1], row[2]) for row in rows]
        for question, answer in self._unwritten.get(conv_key, ()):  # newer than any row
            newest[:0] = [answer, question]
        budget = self.settings.max_tokens - estimate_tokens(self.settings.system_prompt)
        kept: list[Turn] = []
        for turn in newest[: self.max_messages]:
            budget -= estimate_tokens(turn.content)
            if budget < 0:
                break
            kept.append(turn)
        kept.reverse()
        # A history that opens with the bot's reply has lost its question; drop the orphan.
        while kept and kept[0].role == "assistant":
            kept.pop(0)
        return kept

    @property
    def max_chars(self) -> int:
        """A stored message's cap: longer than any the token budget lets into a history (a
        token is at least one character of CJK, about four of other text), so none is cut."""
        return 4 * self.settings.max_tokens + 100

    async def add_exchange(
        self,
        conv_key: str,
        author: str | None,
        question: str,
        answer: str,
        user_key: str | None = None,
    ) -> None:
        """Queue a question and its answer (the asker's `user_key` on both), stored together
        behind the reply; exchanges beyond max_turns are then forgotten. Never waits for the
        database."""
        now = time.time()
        cap = self.max_chars
        question, answer = capped(question, cap), capped(answer, cap)
        exchange = (Turn("user", question, author), Turn("assistant", answer))
        self._unwritten.setdefault(conv_key, []).append(exchange)
        insert = (
            "INSERT INTO messages (conv_key, at, role, author, content, user_key)"
            " VALUES (?, ?, ?, ?, ?, ?)"
        )

        def done(_written: bool) -> None:  # written, or dropped and counted by the writer
            waiting = self._unwritten.get(conv_key)
            if waiting and exchange in waiting:
                waiting.remove(exchange)
                if not waiting:
                    del self._unwritten[conv_key]

        self.writer.put(
            Job(
                (
                    (insert, (conv_key, now, "user", author, question, user_key)),
                    (insert, (conv_key, now, "assistant", None, answer, user_key)),
                    (
                        "DELETE FROM messages WHERE conv_key = ? AND id NOT IN"
                        " (SELECT id FROM messages WHERE conv_key = ? ORDER BY id DESC LIMIT ?)",
                        (conv_key, conv_key, self.max_messages),
                    ),
                ),
                done,
            )
        )

    async def clear(self, conv_key: str) -> int:
        """Forget one conversation; return how many turns were removed. The delete goes through
        the writer too, after any exchange still queued, so none comes back."""
        rows = await self.conn.execute_fetchall(
            "SELECT COUNT(*) FROM messages WHERE conv_key = ?", (conv_key,)
        )
        count = 0 if conv_key in self._clearing else int(next(iter(rows))[0])
        count += 2 * len(self._unwritten.pop(conv_key, ()))
        self._clearing[conv_key] += 1

        def done(_written: bool) -> None:
            self._clearing[conv_key] -= 1
            if self._clearing[conv_key] <= 0:
                del self._clearing[conv_key]

        delete = ("DELETE FROM messages WHERE conv_key = ?", (conv_key,))
        self.writer.put(Job((delete,), done))
        return count

    async def forget(
        self, conv_key: str | None, user_key: str | None, dry_run: bool = False
    ) -> int:
        """Erase the exchanges of a conversation, a person, or a person in a conversation (their
        questions and the answers to them); return how many messages (would) go."""
        where, values = _scope(conv_key, user_key)
        await self.writer.flush()  # exchanges still queued are erased too
        if dry_run:
            row = await fetch_one(self.conn, f"SELECT COUNT(*) FROM messages WHERE {where}", values)
            return int(row[0]) if row else 0
        async with transaction(self.conn) as conn:
            cursor = await conn.execute(f"DELETE FROM messages WHERE {where}", values)
        return max(cursor.rowcount, 0)

    async def remove_older_than(self, before: float) -> int:
        """Retention ([privacy] memory_days): remove messages stored before `before`."""
        async with transaction(self.conn) as conn:
            cursor = await conn.execute("DELETE FROM messages WHERE at < ?", (before,))
        return max(cursor.rowcount, 0)

    async def export(self, conv_key: str) -> list[dict[str, object]]:
        """A conversation's messages, oldest first."""
        rows = await self.conn.execute_fetchall(
            "SELECT at, role, author, user_key, content FROM messages WHERE conv_key = ?"
            " ORDER BY id",
            (conv_key,),
        )
        return [{"kind": "message", **dict(row)} for row in rows]


def _scope(conv_key: str | None, user_key: str | None) -> tuple[str, tuple[str, ...]]:
    if conv_key is None and user_key is None:
        raise ValueError("name a conversation, a person or both")
    named = [(c, v) for c, v in (("conv_key", conv_key), ("user_key", user_key)) if v]
    return " AND ".join(f"{column} = ?" for column, _ in named), tuple(v for _, v in named)
