"""The routing log: one row a decision (the category is the truth, the tier derived), and the
small key-value settings table that holds the routing mode."""

from __future__ import annotations

import os
from dataclasses import dataclass

from router.config import PrivacySettings
from router.decision import RoutingDecision
from router.signals.continuity import PreviousTurn, routed_turn
from router.store.database import Database, Row
from router.text import capped, text_hash

COLUMNS = (
    "decision_id",
    "at",
    "conv_key",
    "prompt_hash",
    "prompt",
    "mode",
    "category",
    "tier",
    "tier_mapping_version",
    "confidence",
    "source",
    "model",
    "llm_category",
    "llm_confidence",
    "llm_latency_ms",
    "knn_category",
    "knn_tier",
    "knn_confidence",
    "knn_latency_ms",
    "prior_category",
    "latency_ms",
    "prompt_tokens",
    "completion_tokens",
    "outcome",
    "error",
    "transcription_ms",
    "open_pid",
    "user_key",
    "prompt_chars",
    "knn_swayed",
)
# A decision's row is written once it has ended; a long request's row is written while it is
# open too (outcome NULL), and its final row then replaces it.
INSERT_SQL = (
    f"INSERT INTO routing_log ({', '.join(COLUMNS)})"
    f" VALUES ({', '.join('?' for _ in COLUMNS)})"
    " ON CONFLICT(decision_id) DO UPDATE SET "
    + ", ".join(f"{column} = excluded.{column}" for column in COLUMNS if column != "decision_id")
)
# A row a killed process spooled (router/store/spool.py), written at the next start: it may have
# been committed just before the kill, so it fills in a missing row, or a row still open or
# marked interrupted (a spooled open row never reopens one), and never touches a finished row
# (which a /forget may have cleared since).
REPLAY_SQL = (
    INSERT_SQL + " WHERE routing_log.outcome IS NULL"
    " OR (routing_log.outcome = 'interrupted' AND excluded.outcome IS NOT NULL)"
)


def process_running(pid: int) -> bool:
    """Whether a process with this id runs on this machine now (the database is a local file)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # running, under another user
        return True
    return True


async def mark_interrupted(conn: Database) -> int:
    """Rows a killed process left open (its request had no outcome yet): marked `interrupted`.
    Rows another running process holds open (a second worker, the bot beside the proxy) stay;
    this process's own id counts as gone, since a container restarts with the same one."""
    async with conn.transaction():
        rows = await conn.fetch_all(
            "SELECT DISTINCT open_pid FROM routing_log"
            " WHERE outcome IS NULL AND open_pid IS NOT NULL"
        )
        gone = [(pid,) for (pid,) in rows if pid == os.getpid() or not process_running(int(pid))]
        marked = 0
        for pid in gone:
            marked += await conn.execute(
                "UPDATE routing_log SET outcome = 'interrupted', open_pid = NULL"
                " WHERE outcome IS NULL AND open_pid = ?",
                pid,
            )
    return marked


@dataclass(frozen=True)
class PromptKeeping:
    """What a row keeps of its prompt: the text capped to `max_chars` (head and tail), or with
    `store` false neither text nor hash; its full length in characters either way."""

    store: bool = True
    max_chars: int = PrivacySettings().max_prompt_chars

    @classmethod
    def of(cls, settings: PrivacySettings) -> PromptKeeping:
        return cls(settings.store_prompts, settings.max_prompt_chars)

    def text(self, text: str) -> str:
        return capped(text, self.max_chars) if self.store else ""

    def hash(self, text: str) -> str:
        return text_hash(text) if self.store else ""


DEFAULT_KEEPING = PromptKeeping()


def row_of(
    decision: RoutingDecision, *, still_open: bool = False, keeping: PromptKeeping = DEFAULT_KEEPING
) -> tuple[object, ...]:
    """The decision's routing-log row, in COLUMNS order; `still_open` for the row of a request
    not yet ended (it names this process, so a restart can tell it was interrupted)."""
    llm, knn = decision.llm, decision.knn
    return (
        decision.id,
        decision.at,
        decision.conv_key,
        keeping.hash(decision.text),
        keeping.text(decision.text),
        decision.mode,
        decision.category,
        decision.tier or None,  # a passthrough model no tier names
        decision.tier_mapping_version,
        decision.confidence,
        decision.source,
        decision.model,
        llm.category if llm else None,
        llm.confidence if llm else None,
        llm.latency_ms if llm else None,
        knn.category if knn else None,
        knn.tier if knn else None,
        knn.confidence if knn else None,
        knn.latency_ms if knn else None,
        decision.prior_category,
        decision.latency_ms,
        decision.prompt_tokens,
        decision.completion_tokens,
        decision.outcome,
        decision.error,
        decision.transcription_ms,
        os.getpid() if still_open else None,
        decision.user_key,
        len(decision.text),
        int(decision.knn_swayed) if knn else None,
    )


async def write_decision(conn: Database, decision: RoutingDecision) -> None:
    """Insert one finished decision at once (tools and tests; the router writes behind)."""
    async with conn.transaction():
        await conn.execute(INSERT_SQL, row_of(decision))


REACTIONS_READ_BACK = 8  # a speaker's chatter turns after a task read through to find it


async def last_turn(
    conn: Database, conv_key: str, user_key: str | None = None
) -> PreviousTurn | None:
    """The conversation's last categorized decision since its last /reset (the speaker's own,
    when `user_key` names one): its context after a restart; when it is chatter, with the task
    the speaker's chatter followed (the task behind a reaction)."""
    # `user_key = ?` or `IS NULL`, not SQLite's `IS ?`: both dialects, and an index either way.
    speaker, values = (
        ("user_key = ?", (conv_key, user_key, conv_key))
        if user_key is not None
        else ("user_key IS NULL", (conv_key, conv_key))
    )
    rows = await conn.fetch_all(
        "SELECT category, at, prompt, confidence FROM routing_log"
        " WHERE conv_key = ? AND category IS NOT NULL"
        f" AND {speaker}"
        " AND at > COALESCE((SELECT at FROM context_resets WHERE conv_key = ?), 0)"
        f" ORDER BY id DESC LIMIT {REACTIONS_READ_BACK + 1}",
        values,
    )
    # Replayed oldest first, as routing recorded them. A row whose text was not kept
    # (store_prompts off, retention, /forget) gives no context.
    context: PreviousTurn | None = None
    for row in reversed(rows):
        text = row["prompt"] or ""
        turn = routed_turn(row["category"], row["at"], text, context, row["confidence"])
        context = turn if turn.text else None
    return context


async def reset_context(conn: Database, conv_key: str, at: float) -> None:
    async with conn.transaction():
        await conn.execute(
            "INSERT INTO context_resets (conv_key, at) VALUES (?, ?)"
            " ON CONFLICT(conv_key) DO UPDATE SET at = excluded.at",
            (conv_key, at),
        )


async def recent_turns(conn: Database, since: float, limit: int) -> list[Row]:
    """Categorized decisions since `since` whose text was kept, newest first: (conv_key,
    user_key, category, at, prompt, confidence) each (a process's context when it starts or
    reconnects)."""
    return await conn.fetch_all(
        "SELECT conv_key, user_key, category, at, prompt, confidence FROM routing_log"
        " WHERE at > ? AND conv_key IS NOT NULL AND category IS NOT NULL AND prompt <> ''"
        " ORDER BY at DESC LIMIT ?",
        (since, limit),
    )


async def resets_since(conn: Database, since: float) -> list[Row]:
    """(conv_key, at) of the conversations reset since `since`."""
    return await conn.fetch_all("SELECT conv_key, at FROM context_resets WHERE at > ?", (since,))
