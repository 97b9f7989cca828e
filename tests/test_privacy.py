"""What crabbot keeps of the family's words (issue 25): retention on a schedule, prompt storage
capped or off, erasure and export from the command line and /forget, files only their owner
reads."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import stat
import subprocess
import time
from pathlib import Path

import pytest

from bot.admin import Command, Text
from bot.chat_user import ChatUser
from bot.cli import main
from bot.console_history import PrivateHistory
from bot.memory import BOT_MIGRATIONS
from router import EmptyMessageError, RoutingDecision, erasure_watch
from router.cluster.shared_state import announce_erasure
from router.store.database import open_database
from router.store.erasure import Scope, erase
from router.store.erasure_notices import leave_notice, notices_after
from router.store.migrations import Migrations, migrate
from router.store.routing_log import last_turn, write_decision
from tests.bot_helpers import dispatch, log_rows, open_core, open_learning_core
from tests.cli_helpers import run_crabbot
from tests.conftest import make_config
from tests.db_helpers import fetch_sync, open_db
from tests.fakes.groq_server import category_reply

DAY_S = 24 * 3600
ANN = ChatUser("console", "ann", "ann")


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def old_decision(text: str, at: float, conv_key: str, user_key: str) -> RoutingDecision:
    decision = RoutingDecision("casual", "cheap", "gpt-4.1-nano", 0.9, "knn", "live", "v2", 3.0)
    decision.text, decision.at, decision.conv_key, decision.user_key = text, at, conv_key, user_key
    decision.outcome, decision.prompt_tokens, decision.completion_tokens = "completed", 12, 30
    return decision


async def test_old_prompt_text_and_memory_are_removed_on_a_schedule_and_counted(
    seeded_db, embedder
):
    core = await open_core(seeded_db, embedder, None, privacy={"prompt_days": 7, "memory_days": 2})
    try:
        assert core.router.retention._task is not None  # open_router scheduled it
        now = time.time()
        conn = core.router.conn
        await write_decision(conn, old_decision("an old worry", now - 8 * DAY_S, "c", "t:1"))
        await write_decision(conn, old_decision("a new plan", now - 1 * DAY_S, "c", "t:1"))
        await core.memory.add_exchange("c", "Ann", "recent question", "recent answer", "t:1")
        await core.memory.flush()  # written behind the reply: let it land before aging it
        await conn.execute(
            "UPDATE messages SET at = ? WHERE content LIKE 'recent%'", (now - 3 * DAY_S,)
        )
        await core.memory.add_exchange("c", "Ann", "today", "answer", "t:1")
        # An erasure's notice to the other processes (whose data, not what) is kept a day.
        for age_s in (3600, 2 * DAY_S):  # the old one last: a new notice clears old ones
            await leave_notice(conn, "c", "t:2", now - age_s)
        done = await core.router.retention.run()
        notices = await notices_after(conn, 0)
        rows = await log_rows(core)
        kept = [turn.content for turn in await core.memory.history("c")]
        stats = await dispatch(core.admin, ChatUser("console", "me", "me"), "c", "/routing stats")
    finally:
        await core.close()
    assert done == {"prompts cleared": 1, "erasure notices cleared": 1, "messages removed": 2}
    assert [round(now - notice.at) for notice in notices] == [3600]
    old, new = rows
    assert old["prompt"] == "" and old["category"] == "casual" and old["completion_tokens"] == 30
    assert new["prompt"] == "a new plan"
    assert kept == ["today", "answer"]
    assert (
        "retention: 1 prompt cleared · 1 erasure notice cleared · 2 messages removed since start"
        in stats
    )
    assert "kept: prompt text 7 d, memory 2 d" in stats


async def test_a_900_kb_prompt_is_stored_capped_with_its_length(seeded_db, embedder, upstream):
    head, tail = "START of the pasted log. ", " END of the pasted log."
    big = head + "x" * (900_000 - len(head) - len(tail)) + tail
    core = await open_core(seeded_db, embedder, upstream.base_url, upstream={"stream": False})
    try:
        reply = await core.agent.handle("console:ann", ANN, big)
        (row,) = await log_rows(core)
        await core.memory.flush()
        (question, _answer) = await core.router.conn.fetch_all(
            "SELECT content FROM messages ORDER BY id"
        )
    finally:
        await core.close()
    assert reply.ok and len(upstream.requests) == 1  # the terminal has no platform limit
    assert row["prompt_chars"] == 900_000 and len(row["prompt"]) <= 2000
    assert row["prompt"].startswith(head) and row["prompt"].endswith(tail)
    assert "[…900000 characters, cut…]" in row["prompt"]
    assert len(question[0]) <= 4 * 3000 + 100  # memory keeps no more than a history could use


async def test_with_prompt_storage_off_no_text_is_kept_and_the_pool_learns_nothing(
    seeded_db, embedder, upstream, groq_server
):
    groq_server.respond = lambda request: category_reply("analysis", 0.95)
    core = await open_learning_core(
        seeded_db,
        embedder,
        upstream.base_url,
        groq_server.base_url,
        privacy={"store_prompts": False},
        upstream={"stream": False},
    )
    text = "Compare the fuel costs of our two cars over a 900 km road trip to the coast"
    try:
        await core.router.set_mode("shadow")
        before = core.router.pool_size
        await core.agent.handle("telegram:7", ChatUser("telegram", 7, "Dad"), text)
        (row,) = await log_rows(core)
        after = core.router.pool_size
        context = await last_turn(core.router.conn, "telegram:7", "telegram:7")
    finally:
        await core.close()
    assert row["prompt"] == row["prompt_hash"] == "" and row["prompt_chars"] == len(text)
    assert row["category"] == "analysis" and groq_server.requests
    assert after == before  # the n-gram view needs text: no text, no learning
    assert context is None  # and a restart has no previous turn to continue


async def test_the_router_finds_nothing_to_read_in_invisible_characters(seeded_db, embedder):
    core = await open_core(seeded_db, embedder, None)
    try:
        for text in ("\u200b\u200c\u200d", "\ufeff \u2060\t", "\x07\x1b\x00", "\u3164\u2800"):
            with pytest.raises(EmptyMessageError):
                await core.router.route(text)
        assert (await core.router.route("\u200bhi\u200b")).tier
    finally:
        await core.close()


async def test_new_files_are_private_and_readable_ones_are_warned_about(tmp_path, embedder, caplog):
    db = tmp_path / "new" / "data" / "crabbot.db"
    core = await open_core(db, embedder, None, pool={"seed": False})
    try:
        await core.memory.add_exchange("c", None, "hello", "hi")
        await core.memory.flush()  # WAL and SHM exist now
        modes = {p.name: mode_of(p) for p in db.parent.iterdir()}
        # The routing log's crash spool: this process's file, empty until a row is queued.
        spooled = {mode_of(p) for p in (db.parent / "crabbot.db-spool").iterdir()}
    finally:
        await core.close()
    assert modes == {
        **{"crabbot.db": 0o600, "crabbot.db-wal": 0o600, "crabbot.db-shm": 0o600},
        "crabbot.db-spool": 0o700,
        "crabbot.db-migrate.lock": 0o600,  # held while a start migrates (empty)
    }
    assert spooled == {0o600}
    assert mode_of(db.parent) == 0o700
    history = PrivateHistory(db.parent / "console_history")
    history.file.store_string("a line")
    assert mode_of(history.path) == 0o600

    db.chmod(0o644)
    caplog.set_level(logging.WARNING)
    core = await open_core(db, embedder, None, pool={"seed": False})
    await core.close()
    assert f"{db} is readable by other accounts (mode 644): chmod 600" in caplog.text


async def test_forget_at_the_console_empties_its_history_file_and_arrow_keys(seeded_db, embedder):
    core = await open_core(seeded_db, embedder, None)
    history = PrivateHistory(seeded_db.parent / "console_history")
    for line in ("my bank password hint", "second line"):
        history.file.append_string(line)
    core.admin.console_history = history
    try:
        await core.memory.add_exchange("console:ann", "ann", "q", "a", "console:ann")
        answer = await core.admin.answer(ANN, "console:ann", Command("forget"))
    finally:
        await core.close()
    assert isinstance(answer, Text)
    assert answer.text == (
        "Done: erased 2 memory messages, 0 routing-log prompts, 0 pool entries, 2 console"
        " history entries of yours from this conversation."
    )
    assert history.path.read_text() == "" and history.file.get_strings() == []


async def test_crabbot_forget_of_the_console_empties_a_running_consoles_arrow_keys(
    seeded_db, embedder, monkeypatch
):
    monkeypatch.setattr(erasure_watch, "RECHECK_S", 0.0)
    core = await open_core(seeded_db, embedder, None)
    history = PrivateHistory(seeded_db.parent / "console_history")
    history.file.append_string("my bank password hint")
    core.admin.console_history = history
    try:
        assert history.file.get_strings() == ["my bank password hint"]
        other = await open_database(make_config(seeded_db).database)  # another terminal's
        try:
            done = await erase(other, Scope(conv_key="console:ann"))
            await announce_erasure(other, Scope(conv_key="console:ann"), done.pool_hashes)
        finally:
            await other.close()
        if core.router.shared is not None:
            await core.router.shared.until(lambda: core.router.counters["erasures_heard"], 10.0)
        else:
            await core.router.erasures.check()
        await core.router.erasures.settled()
    finally:
        await core.close()
    assert history.file.get_strings() == []


def _build_family_db(db: Path, embedder) -> None:
    """Two people in one Telegram group and a console chat: memory, log rows, pool entries."""

    async def build() -> None:
        core = await open_core(db, embedder, None)
        conn, now = core.router.conn, time.time()
        for user, text in (("telegram:42", "mom's worry"), ("telegram:43", "dad's plan")):
            await core.memory.add_exchange("telegram:-1", user, text, "an answer", user)
            await write_decision(conn, old_decision(text, now, "telegram:-1", user))
        await write_decision(
            conn, old_decision("at the terminal", now, "console:ann", "console:ann")
        )
        await conn.execute(
            "INSERT INTO pool (prompt_hash, text, embedding, embedder_id, category, label_source,"
            " added_at, conv_key, user_key) VALUES ('h', 'mom''s worry', ?, 'e', 'analysis',"
            " 'llm', 0, 'telegram:-1', 'telegram:42')",
            (b"\x00",),
        )
        await core.close()
        history = PrivateHistory(db.parent / "console_history")
        history.file.store_string("at the terminal")

    asyncio.run(build())


def _count(db: Path, sql: str) -> int:
    return int(fetch_sync(db, sql)[0][0])


def test_crabbot_forget_counts_in_a_dry_run_then_erases_a_person(seeded_db, embedder, capsys):
    _build_family_db(seeded_db, embedder)
    assert main(["forget", "--db", str(seeded_db), "--user", "telegram:42", "--dry-run"]) == 0
    assert capsys.readouterr().out == (
        "would erase 2 memory messages, 1 routing-log prompt, 1 pool entry (telegram:42)\n"
    )
    assert _count(seeded_db, "SELECT COUNT(*) FROM messages") == 4  # nothing went
    assert main(["forget", "--db", str(seeded_db), "--user", "telegram:42"]) == 0
    assert capsys.readouterr().out.startswith(
        "erased 2 memory messages, 1 routing-log prompt, 1 pool entry (telegram:42)\n"
    )
    assert _count(seeded_db, "SELECT COUNT(*) FROM messages WHERE user_key = 'telegram:43'") == 2
    assert _count(seeded_db, "SELECT COUNT(*) FROM messages") == 2
    assert _count(seeded_db, "SELECT COUNT(*) FROM routing_log WHERE prompt LIKE 'mom%'") == 0
    assert _count(seeded_db, "SELECT COUNT(*) FROM routing_log") == 3  # rows stay for stats
    assert _count(seeded_db, "SELECT COUNT(*) FROM pool WHERE user_key IS NOT NULL") == 0
    files = [seeded_db, Path(f"{seeded_db}-wal")]
    assert not any(b"mom's worry" in path.read_bytes() for path in files if path.exists())
    assert main(["forget", "--db", str(seeded_db)]) == 2


def test_crabbot_forget_a_console_conversation_covers_its_history(seeded_db, embedder, capsys):
    _build_family_db(seeded_db, embedder)
    history = seeded_db.parent / "console_history"
    assert main(["forget", "--db", str(seeded_db), "--conv", "console:ann"]) == 0
    assert capsys.readouterr().out == (
        "erased 0 memory messages, 1 routing-log prompt, 0 pool entries, 1 console history entry"
        " (console:ann)\n"
    )
    assert history.read_text() == "" and mode_of(history) == 0o600


def test_crabbot_export_writes_a_conversation_as_json_lines(seeded_db, embedder, tmp_path):
    _build_family_db(seeded_db, embedder)
    out = tmp_path / "family.jsonl"
    out.write_text("an older export, readable by everyone\n")
    out.chmod(0o644)
    assert main(["export", "--db", str(seeded_db), "--conv", "telegram:-1", "--out", str(out)]) == 0
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert mode_of(out) == 0o600  # the owner's alone, though the file was there and open
    assert [row["kind"] for row in rows] == ["message"] * 4 + ["routing_log"] * 2 + ["pool"]
    assert rows[0]["content"] == "mom's worry" and rows[0]["user_key"] == "telegram:42"
    assert rows[4]["prompt"] == "mom's worry" and rows[4]["category"] == "casual"
    assert rows[6]["text"] == "mom's worry" and "embedding" not in rows[6]


DAD_WORDS = "Our passport numbers for the booking: X1234567 and X7654321"
QUOTE = f'(replying to Dad: "{DAD_WORDS}")'


def _build_quoting_db(db: Path, embedder) -> None:
    """Dad (telegram:43) asks in one Telegram group; there and in another group, Mom replies
    quoting his words."""

    async def build() -> None:
        core = await open_core(db, embedder, None)
        memory = core.memory
        await memory.add_exchange("telegram:-1", "Dad", DAD_WORDS, "Noted.", "telegram:43")
        for conv_key in ("telegram:-1", "telegram:-2"):
            await memory.add_exchange(
                conv_key, "Mom", "book it", "Done.", "telegram:42", QUOTE, "telegram:43"
            )
        await core.close()

    asyncio.run(build())


def test_crabbot_forget_clears_a_persons_words_quoted_in_others_replies(
    seeded_db, embedder, capsys, tmp_path
):
    _build_quoting_db(seeded_db, embedder)
    out = tmp_path / "family.jsonl"
    assert main(["export", "--db", str(seeded_db), "--conv", "telegram:-1", "--out", str(out)]) == 0
    exported = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [(row["content"], row["quote_excerpt"], row["quoted_key"]) for row in exported] == [
        (DAD_WORDS, None, None),
        ("Noted.", None, None),
        ("book it", QUOTE, "telegram:43"),
        ("Done.", None, None),
    ]
    dad_here = ["--user", "telegram:43", "--conv", "telegram:-1"]
    assert main(["forget", "--db", str(seeded_db), *dad_here, "--dry-run"]) == 0
    assert capsys.readouterr().out == (
        "would erase 2 memory messages, 1 quote in others' replies, 0 routing-log prompts,"
        " 0 pool entries (telegram:43 in telegram:-1)\n"
    )
    assert _count(seeded_db, "SELECT COUNT(*) FROM messages WHERE quoted_key = 'telegram:43'") == 2
    assert main(["forget", "--db", str(seeded_db), *dad_here]) == 0
    assert capsys.readouterr().out.startswith("erased 2 memory messages, 1 quote in others'")
    # The other group's reply still quotes him, until he is erased everywhere.
    assert main(["forget", "--db", str(seeded_db), "--user", "telegram:43"]) == 0
    assert capsys.readouterr().out.startswith("erased 0 memory messages, 1 quote in others'")
    rows = fetch_sync(
        seeded_db, "SELECT conv_key, content, quote_excerpt, quoted_key FROM messages ORDER BY id"
    )
    assert rows == [
        ("telegram:-1", "book it", None, None),
        ("telegram:-1", "Done.", None, None),
        ("telegram:-2", "book it", None, None),
        ("telegram:-2", "Done.", None, None),
    ]
    files = [seeded_db, Path(f"{seeded_db}-wal")]
    assert not any(b"X1234567" in path.read_bytes() for path in files if path.exists())


async def test_a_reply_remembered_before_quotes_were_kept_apart_reads_as_before(
    seeded_db, embedder
):
    db = await open_db(seeded_db)
    await migrate(db, "bot", Migrations(*(scripts[:-1] for scripts in BOT_MIGRATIONS)))
    old = f"book it {QUOTE}"  # as memory kept a reply then: the quote in the replier's words
    for role, author, content in (("user", "Mom", old), ("assistant", None, "Done.")):
        await db.execute(
            "INSERT INTO messages (conv_key, at, role, author, content, user_key)"
            " VALUES ('telegram:-1', ?, ?, ?, ?, 'telegram:42')",
            (time.time(), role, author, content),
        )
    await db.close()
    core = await open_core(seeded_db, embedder, None)
    try:
        history = await core.memory.history("telegram:-1")
        # Whom it quoted is not known: Dad's erasure leaves it; Mom's takes it, as before.
        assert await core.memory.forget(None, "telegram:43", dry_run=True) == (0, 0)
        assert await core.memory.forget(None, "telegram:42", dry_run=True) == (2, 0)
    finally:
        await core.close()
    assert [(turn.content, turn.author) for turn in history] == [(old, "Mom"), ("Done.", None)]


def _crabbot(*args: str) -> subprocess.CompletedProcess[str]:
    """As the owner runs it; the environment read now, so it names this test's database."""
    env = {k: v for k, v in os.environ.items() if k not in ("GROQ_API_KEY", "OPENAI_API_KEY")}
    return run_crabbot(*args, env=env)


def test_crabbot_forget_and_export_end_once_they_have_said_what_they_did(seeded_db, embedder):
    _build_family_db(seeded_db, embedder)
    forgot = _crabbot("forget", "--db", str(seeded_db), "--user", "telegram:42", "--dry-run")
    exported = _crabbot("export", "--db", str(seeded_db), "--conv", "telegram:-1")
    assert forgot.returncode == 0, forgot.stderr
    assert forgot.stdout == (
        "would erase 2 memory messages, 1 routing-log prompt, 1 pool entry (telegram:42)\n"
    )
    assert exported.returncode == 0, exported.stderr
    assert len(exported.stdout.splitlines()) == 7


def test_the_example_config_documents_the_privacy_defaults():
    from bot.config import BotPrivacySettings, load_config

    example = Path(__file__).resolve().parent.parent / "config" / "crabbot.example.toml"
    assert load_config(example).privacy == BotPrivacySettings()
    assert BotPrivacySettings().prompt_days == BotPrivacySettings().memory_days == 30
