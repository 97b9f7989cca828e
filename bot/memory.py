"""Conversation memory: the last exchanges of each conversation in the `messages` table of the
one SQLite file, trimmed to a number of exchanges and an approximate token budget."""

from __future__ import annotations

import time
from dataclasses import dataclass

import aiosqlite

from bot.config import MemorySettings
from router.store.database import migrate, transaction

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

    def __init__(self, conn: aiosqlite.Connection, settings: MemorySettings) -> None:
        self.conn = conn
        self.settings = settings

    @classmethod
    async def open(cls, conn: aiosqlite.Connection, settings: MemorySettings) -> Memory:
        await migrate(conn, "bot", BOT_MIGRATIONS)
        return cls(conn, settings)

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
        budget = self.settings.max_tokens - estimate_tokens(self.settings.system_prompt)
        kept: list[Turn] = []
        for row in rows:
            budget -= estimate_tokens(row[1])
            if budget < 0:
                break
            kept.append(Turn(row[0], row[1], row[2]))
        kept.reverse()
        # A history that opens with the bot's reply has lost its question; drop the orphan.
        while kept and kept[0].role == "assistant":
            kept.pop(0)
        return kept

    async def add_exchange(
        self, conv_key: str, author: str | None, question: str, answer: str
    ) -> None:
        """Store a question and its answer together, then forget exchanges beyond max_turns."""
        now = time.time()
        async with transaction(self.conn) as conn:
            await conn.executemany(
                "INSERT INTO messages (conv_key, at, role, author, content) VALUES (?, ?, ?, ?, ?)",
                [
                    (conv_key, now, "user", author, question),
                    (conv_key, now, "assistant", None, answer),
                ],
            )
            await conn.execute(
                "DELETE FROM messages WHERE conv_key = ? AND id NOT IN"
                " (SELECT id FROM messages WHERE conv_key = ? ORDER BY id DESC LIMIT ?)",
                (conv_key, conv_key, self.max_messages),
            )

    async def clear(self, conv_key: str) -> int:
        """Forget one conversation; return how many turns were removed."""
        async with transaction(self.conn) as conn:
            cursor = await conn.execute("DELETE FROM messages WHERE conv_key = ?", (conv_key,))
        return int(cursor.rowcount or 0)
