"""The family's words in the chat (issue 25), end to end: a real python-telegram-bot Application
on a fake Bot API, the real groq and openai SDKs on fake servers. /forget erases one person's
words; a message with nothing to read or longer than Telegram allows reaches no model; no
message text reaches the logs."""

from __future__ import annotations

import logging

import pytest

from bot.admin import HELP
from router import Secrets
from tests.bot_helpers import log_rows
from tests.fakes.groq_server import Reply, category_reply
from tests.fakes.telegram_api import BOT_USERNAME, FakeTelegram
from tests.telegram_helpers import running

GROUP = -1002
PRIVATE = 555
MOM, DAD = 42, 43
MOM_TEXT = "Is my blood sugar of 9.1 after breakfast a reason to see the doctor this week?"
DAD_TEXT = "Compare the fuel costs of our two cars over a 900 km road trip to the coast"


@pytest.fixture
async def telegram():
    server = await FakeTelegram().start()
    yield server
    await server.stop()


def shadow_with_groq(groq_server) -> dict:
    """The categorizer on the fake Groq decides (shadow mode) and teaches the pool."""
    return {
        "mode": "shadow",
        "secrets": Secrets(groq_api_key="gsk-test", openai_api_key=None, openai_base_url=None),
        "categorizer": {"base_url": groq_server.base_url},
        # Erasure is under test, not the learning gate: this chat's labels are trusted at once.
        "pool": {"trusted_after": 0},
    }


async def table(core, sql: str) -> list[dict]:
    """Rows as the database holds them, once what is written behind the replies has landed."""
    await core.memory.flush()
    await core.router.pool_writer.flush()
    return [dict(row) for row in await core.router.conn.fetch_all(sql)]


async def test_forget_erases_one_persons_words_in_a_group_and_keeps_the_rest(
    seeded_db, embedder, upstream, telegram, groq_server
):
    groq_server.respond = lambda request: category_reply("analysis", 0.95)
    async with running(
        seeded_db, embedder, upstream, telegram, **shadow_with_groq(groq_server)
    ) as core:
        await core.router.set_mode("shadow")
        pool = core.router.pool
        before = len(pool)
        await telegram.push_message(GROUP, MOM_TEXT, mention=True, user_id=MOM)
        await telegram.wait_until(lambda: len(telegram.texts(GROUP)) == 1)
        await telegram.push_message(GROUP, DAD_TEXT, mention=True, user_id=DAD, first_name="Dad")
        await telegram.wait_until(lambda: len(telegram.texts(GROUP)) == 2)
        assert len(pool) == before + 2  # the categorizer taught the pool both messages
        await telegram.push_message(GROUP, "/forget", user_id=MOM)
        await telegram.wait_until(lambda: len(telegram.texts(GROUP)) == 3)
        rows = await log_rows(core)
        memory = await table(core, "SELECT user_key, content FROM messages ORDER BY id")
        learned = await table(
            core, "SELECT text, conv_key, user_key FROM pool WHERE label_source = 'llm'"
        )
        in_memory = (pool.contains_text(MOM_TEXT), pool.contains_text(DAD_TEXT), len(pool))
        cached = embedder.cached(MOM_TEXT)  # a reply to her message would read it as known
    assert cached is None
    assert telegram.texts(GROUP)[2] == (
        "Done: erased 2 memory messages, 1 routing-log prompt, 1 pool entry of yours from"
        " this conversation."
    )
    mom, dad = rows
    # Her row stays for the stats, without her words; his keeps them.
    assert mom["user_key"] == f"telegram:{MOM}" and mom["prompt"] == mom["prompt_hash"] == ""
    assert mom["category"] == "analysis" and mom["tier"] and mom["prompt_tokens"] > 0
    assert dad["prompt"] == DAD_TEXT
    assert [m["user_key"] for m in memory] == [f"telegram:{DAD}"] * 2
    assert learned == [
        {"text": DAD_TEXT, "conv_key": f"telegram:{GROUP}", "user_key": "telegram:43"}
    ]
    assert in_memory == (False, True, before + 1)  # gone from the running pool too


MOM_REPLY = "Is the train cheaper than that for the four of us?"


async def test_forget_erases_a_persons_words_quoted_in_anothers_reply_and_keeps_hers(
    seeded_db, embedder, upstream, telegram
):
    upstream.reply = lambda body: "Hard to say."  # an answer that repeats nobody's words
    async with running(seeded_db, embedder, upstream, telegram) as core:
        await telegram.push_message(GROUP, DAD_TEXT, mention=True, user_id=DAD, first_name="Dad")
        await telegram.wait_until(lambda: len(telegram.texts(GROUP)) == 1)
        await telegram.push_message(
            GROUP,
            MOM_REPLY,
            mention=True,
            user_id=MOM,
            reply_to_user="Dad",
            replied_text=f"@{BOT_USERNAME} {DAD_TEXT}",
        )
        await telegram.wait_until(lambda: len(telegram.texts(GROUP)) == 2)
        await telegram.push_message(GROUP, "/forget", user_id=DAD, first_name="Dad")
        await telegram.wait_until(lambda: len(telegram.texts(GROUP)) == 3)
        await telegram.push_message(GROUP, "And by bus?", mention=True, user_id=MOM)
        await telegram.wait_until(lambda: len(telegram.texts(GROUP)) == 4)
        memory = await table(core, "SELECT user_key, content FROM messages ORDER BY id")
    # Mom's next question is read with her earlier one, without the excerpt of Dad's words.
    context = upstream.requests[-1].body["messages"]
    assert [m["content"] for m in context[1:]] == [
        f"Mom: {MOM_REPLY}",
        "Hard to say.",
        "Mom: And by bus?",
    ]
    assert [m["content"] for m in memory] == [
        MOM_REPLY,
        "Hard to say.",
        "And by bus?",
        "Hard to say.",
    ]
    assert {m["user_key"] for m in memory} == {f"telegram:{MOM}"}
    assert telegram.texts(GROUP)[2] == (
        "Done: erased 2 memory messages, 1 quote in others' replies, 1 routing-log prompt,"
        " 0 pool entries of yours from this conversation."
    )


async def test_a_message_of_invisible_characters_is_empty_and_reaches_no_model(
    seeded_db, embedder, upstream, telegram, groq_server
):
    invisible = "\u200b\u200d\u2060\ufeff\u3164"  # zero-width space, joiners, BOM, Hangul filler
    async with running(
        seeded_db, embedder, upstream, telegram, **shadow_with_groq(groq_server)
    ) as core:
        await telegram.push_message(GROUP, invisible, mention=True)
        await telegram.wait_until(lambda: len(telegram.texts(GROUP)) == 1)
        rows = await log_rows(core)
        memory = await table(core, "SELECT * FROM messages")
    assert telegram.texts(GROUP) == [HELP]  # as a bare mention
    assert rows == [] and memory == []
    assert upstream.requests == [] and groq_server.requests == []


async def test_a_text_longer_than_telegram_allows_is_refused_in_one_line_before_any_model(
    seeded_db, embedder, upstream, telegram, groq_server
):
    huge = "All the family recipes, one after another. " * 95_000  # 4.1 MB, a lax Bot API server
    async with running(
        seeded_db, embedder, upstream, telegram, **shadow_with_groq(groq_server)
    ) as core:
        await telegram.push_message(PRIVATE, huge)
        await telegram.wait_until(lambda: len(telegram.texts(PRIVATE)) == 1)
        await telegram.push_message(PRIVATE, "x" * 4096)  # Telegram's own limit still passes
        await telegram.wait_until(lambda: len(upstream.requests) == 1)
        rows = await log_rows(core)
        refused = core.counters["too_long_refused"]
    line = telegram.texts(PRIVATE)[0]
    assert line.startswith("That message is too long for me: 4,084,999 characters")
    assert "\n" not in line and "Telegram messages hold at most 4,096" in line
    assert len(upstream.requests) == 1 and len(groq_server.requests) == 1  # the short one only
    assert [row["prompt_chars"] for row in rows] == [4096] and refused == 1


async def test_no_message_text_in_the_logs_at_the_default_level(
    seeded_db, embedder, upstream, telegram, groq_server, caplog
):
    secret = "Grandma's PIN is 4711 and the spare key hides under the blue flowerpot"
    # The categorizer echoes the message as its category; the chat model fails, then answers.
    groq_server.respond = lambda request: Reply(f'{{"category": "{secret}", "confidence": 0.9}}')
    upstream.fail_status, upstream.fail_count = 500, 1
    caplog.set_level(logging.WARNING)  # crabbot's default level
    caplog.set_level(logging.INFO, logger="bot")  # crabbot's own loggers, one level lower
    caplog.set_level(logging.INFO, logger="router")
    async with running(
        seeded_db, embedder, upstream, telegram, **shadow_with_groq(groq_server)
    ) as core:
        await core.router.set_mode("shadow")
        await telegram.push_message(GROUP, secret, mention=True)
        await telegram.wait_until(lambda: len(telegram.texts(GROUP)) == 1)
        await telegram.push_message(GROUP, secret + " again", mention=True)
        await telegram.wait_until(lambda: len(telegram.texts(GROUP)) == 2)
        rows = await log_rows(core)
    assert [row["source"] for row in rows] == ["fallback", "fallback"]  # failures were logged
    assert any(record.levelno >= logging.WARNING for record in caplog.records)
    logged = caplog.text + "".join(record.getMessage() for record in caplog.records)
    for words in ("PIN", "4711", "flowerpot", "Grandma"):
        assert words not in logged
