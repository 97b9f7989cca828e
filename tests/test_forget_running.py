"""`crabbot forget` at a terminal reaches the bots and proxies running on the database: they let
go of the person's turns they hold as routing context and of the pool entries their messages
taught, without a restart (on SQLite they read the erasure's notice on the way of the next
request; on PostgreSQL they hear it)."""

from __future__ import annotations

import asyncio
import json
import os
import time

import pytest

from bot.chat_user import ChatUser
from bot.erasure import forget
from router import ModelRouter, Secrets, erasure_watch
from router import open_router as build_router
from router.cluster.shared_state import announce_erasure
from router.pool.pool import PoolEntry
from router.signals.continuity import PreviousTurn
from router.store.database import open_database
from router.store.erasure import Scope, erase
from tests.bot_helpers import open_core, open_learning_core
from tests.cli_helpers import run_crabbot
from tests.conftest import make_config
from tests.fakes.groq_server import Reply

GROUP = "telegram:-1"
GRANDSON, COUSIN = "telegram:42", "telegram:43"
CODING = "幫我寫一個 SQL 查每個班分數第二高的學生 mysql 5.7"
HEARD_S = 10.0  # how long a PostgreSQL process may take to hear it (it takes milliseconds)


async def open_router(db, embedder) -> ModelRouter:
    return await build_router(make_config(db), Secrets(groq_api_key=None), embedder=embedder)


async def crabbot_forget(*args: str) -> None:
    """`crabbot forget` as the owner runs it at another terminal: another process."""
    env = {k: v for k, v in os.environ.items() if k not in ("GROQ_API_KEY", "OPENAI_API_KEY")}
    done = await asyncio.to_thread(run_crabbot, "forget", *args, env=env)
    assert done.returncode == 0, done.stderr


async def test_crabbot_forget_reaches_a_running_bot_without_a_restart(
    seeded_db, embedder, monkeypatch
):
    monkeypatch.setattr(erasure_watch, "RECHECK_S", 0.0)  # the next request reads the notice
    router = await open_router(seeded_db, embedder)
    try:
        then = time.time() - 60
        for user in (GRANDSON, COUSIN):
            await router.route(CODING, conv_key=GROUP, at=then, user_key=user)
        taught = "外婆的滷肉飯 醬油和冰糖的比例是多少"
        assert router.pool is not None
        vector = embedder.embed([taught])[0]
        entry = PoolEntry(taught, "simple_lookup", vector, "llm", 0.9, GROUP, GRANDSON, GROUP)
        assert await router.pool.add_many([entry]) == 1
        assert router.pool.contains_text(taught)
        size = len(router.pool)

        await crabbot_forget("--db", str(seeded_db), "--user", GRANDSON)
        if router.shared is not None:  # PostgreSQL: heard, not read on a request's way

            def let_go() -> bool:
                assert router.pool is not None
                held = router.context.held(GROUP, GRANDSON)
                return held is None and not router.pool.contains_text(taught)

            await router.shared.until(let_go, HEARD_S)

        follow_up = await router.route("why?", conv_key=GROUP, at=then + 5, user_key=GRANDSON)
        assert follow_up.prior_category is None  # the erased request is no context
        await router.erasures.settled()
        assert not router.pool.contains_text(taught) and len(router.pool) == size - 1
        assert embedder.cached(CODING) is None  # a reply to it would read it as a known message
        assert taught not in [n.text for n in router.pool.search(vector, 5)]
        # The cousin in the same group keeps their own context.
        theirs = await router.route("why?", conv_key=GROUP, at=then + 6, user_key=COUSIN)
        assert theirs.prior_category == "coding"
    finally:
        await router.close()


async def test_a_reply_still_streaming_when_its_sender_is_erased_keeps_nothing_of_them(
    seeded_db, embedder, upstream, monkeypatch
):
    """`crabbot forget` while the bot still streams its answer to the person: when the stream
    ends, neither the conversation's memory nor the request's routing-log row keeps their
    words; the cousin's exchange before it stays."""
    monkeypatch.setattr(erasure_watch, "RECHECK_S", 0.0)
    core = await open_core(seeded_db, embedder, upstream.base_url)
    router = core.router
    erased_mid_stream = False

    async def forget_mid_stream(_sent: str) -> None:
        nonlocal erased_mid_stream
        if erased_mid_stream:
            return
        erased_mid_stream = True
        await crabbot_forget("--db", str(seeded_db), "--user", GRANDSON)
        if router.shared is not None:  # PostgreSQL: heard, not read on a request's way
            await router.shared.until(lambda: router.counters["erasures_heard"] == 1, HEARD_S)
        else:
            await router.erasures.check(max_age_s=0.0)
        await router.erasures.settled()

    try:
        cousin = ChatUser("telegram", 43, "Cousin")
        await core.agent.handle(GROUP, cousin, "早安 今天好冷")
        upstream.gate = forget_mid_stream
        reply = await core.agent.handle(GROUP, ChatUser("telegram", 42, "Grandson"), CODING)
        assert reply.ok and erased_mid_stream
        assert await core.memory.flush() and await router.log.flush()
        kept = [turn.content for turn in await core.memory.history(GROUP)]
        rows = await router.conn.fetch_all(
            "SELECT prompt, prompt_hash FROM routing_log WHERE decision_id = ?",
            (reply.decision.id,),
        )
    finally:
        await core.close()
    assert len(kept) == 2 and "早安 今天好冷" in kept[0] and CODING not in "".join(kept)
    assert [tuple(row) for row in rows] == [("", "")]


async def test_crabbot_forget_while_an_answer_streams_reaches_it_with_no_other_message(
    seeded_db, embedder, upstream
):
    """`crabbot forget` at a terminal while the bot still streams its answer to the person, and
    nothing else reads the erasure's notice meanwhile: when the stream ends, memory keeps nothing
    of them, their routing-log row keeps no words, and the next message (the cousin's) sends
    none of their words to the model."""
    core = await open_core(seeded_db, embedder, upstream.base_url)
    router = core.router
    erased: list[bool] = []

    async def forget_mid_stream(_sent: str) -> None:
        if not erased:
            erased.append(True)
            await crabbot_forget("--db", str(seeded_db), "--user", GRANDSON)
            if router.shared is not None:  # PostgreSQL: heard, not read on a request's way
                await router.shared.until(lambda: router.counters["erasures_heard"] == 1, HEARD_S)

    try:
        upstream.gate = forget_mid_stream
        reply = await core.agent.handle(GROUP, ChatUser("telegram", 42, "Grandson"), CODING)
        upstream.gate = None
        cousin = await core.agent.handle(GROUP, ChatUser("telegram", 43, "Cousin"), "早安 今天好冷")
        assert await core.memory.flush() and await router.log.flush()
        kept = [turn.content for turn in await core.memory.history(GROUP)]
        rows = await router.conn.fetch_all(
            "SELECT prompt FROM routing_log WHERE decision_id = ?", (reply.decision.id,)
        )
    finally:
        await core.close()
    assert reply.ok and cousin.ok and erased
    assert CODING not in json.dumps(upstream.requests[-1].body, ensure_ascii=False)
    assert CODING not in "".join(kept) and len(kept) == 2  # the cousin's exchange
    assert [tuple(row) for row in rows] == [("",)]


async def test_a_reset_while_an_answer_streams_keeps_nothing_of_that_exchange(
    seeded_db, embedder, upstream
):
    """/reset lands while the bot still streams its answer: the conversation starts over, so
    the exchange asked before the reset is not stored when the stream ends."""
    core = await open_core(seeded_db, embedder, upstream.base_url)
    said: list[str] = []

    async def reset_mid_stream(_sent: str) -> None:
        if not said:
            said.append(await core.admin.reset(GROUP))

    try:
        grandson = ChatUser("telegram", 42, "Grandson")
        await core.agent.handle(GROUP, grandson, "早安 今天好冷")
        upstream.gate = reset_mid_stream
        reply = await core.agent.handle(GROUP, grandson, CODING)
        assert await core.memory.flush()
        kept = await core.memory.history(GROUP)
    finally:
        await core.close()
    assert reply.ok and said[0].startswith("Forgot this conversation (2 messages)")
    assert kept == []


async def test_forget_while_a_message_is_being_routed_keeps_nothing_of_it(
    seeded_db, embedder, upstream, groq_server
):
    """/forget lands while the categorizer is still naming the person's message (shadow mode,
    every message waits on it): when routing goes on, the message teaches the pool nothing,
    is no one's routing context, and its routing-log row and memory keep nothing of it."""
    groq_server.respond = lambda _r: Reply('{"category": "coding", "confidence": 0.95}')
    core = await open_learning_core(seeded_db, embedder, upstream.base_url, groq_server.base_url)
    router = core.router
    erased: list[str] = []

    async def forget_meanwhile() -> None:
        if not erased:
            done = await forget(router.conn, core.memory, Scope(GROUP, GRANDSON), router=router)
            erased.append(done.line())

    groq_server.gate = forget_meanwhile
    try:
        reply = await core.agent.handle(GROUP, ChatUser("telegram", 42, "Grandson"), CODING)
        assert reply.ok and erased
        assert await core.memory.flush() and await router.log.flush()
        assert await router.pool_writer.flush()
        kept = await core.memory.history(GROUP)
        prompts = await router.conn.fetch_all(
            "SELECT prompt, prompt_hash FROM routing_log WHERE decision_id = ?",
            (reply.decision.id,),
        )
        pooled = await router.conn.fetch_all(
            "SELECT COUNT(*) FROM pool WHERE user_key = ?", (GRANDSON,)
        )
        held = router.context.held(GROUP, GRANDSON)
    finally:
        await core.close()
    assert kept == [] and [tuple(row) for row in prompts] == [("", "")]
    assert pooled[0][0] == 0 and held is None


async def test_forget_in_the_same_process_reaches_a_reply_still_streaming(seeded_db, embedder):
    """/forget served by the process that is still streaming the person's answer."""
    router = await open_router(seeded_db, embedder)
    try:
        streaming = await router.route(CODING, conv_key=GROUP, user_key=GRANDSON)
        await router.erase(Scope(GROUP, GRANDSON))
        router.finish(streaming, "completed")
        assert await router.log.flush()
        rows = await router.conn.fetch_all(
            "SELECT prompt, prompt_hash FROM routing_log WHERE decision_id = ?", (streaming.id,)
        )
    finally:
        await router.close()
    assert [tuple(row) for row in rows] == [("", "")]


async def test_an_erasure_read_late_keeps_the_turns_made_since(seeded_db, embedder, monkeypatch):
    """The bot reads notices at most every 2 s: a request the person sent after the erasure,
    routed before the notice was read, stays their context; what they said before goes, from
    memory and from the rows this process wrote after the erasure."""
    monkeypatch.setattr(erasure_watch, "RECHECK_S", 3600.0)
    router = await open_router(seeded_db, embedder)
    try:
        before = await router.route(CODING, conv_key=GROUP, at=time.time() - 60, user_key=GRANDSON)
        router.log.finish(before, "completed")  # queued: written after the erasure below
        other = await open_database(make_config(seeded_db).database)  # as another process
        try:
            await erase(other, Scope(GROUP, GRANDSON))
        finally:
            await other.close()
        since = "那 PostgreSQL 要怎麼寫 同樣查第二高分"
        after = await router.route(since, conv_key=GROUP, at=time.time() + 1, user_key=GRANDSON)
        router.log.finish(after, "completed")
        await router.erasures.check(max_age_s=0.0)
        await router.erasures.settled()
        held = router.context.held(GROUP, GRANDSON)
        rows = await router.conn.fetch_all(
            "SELECT prompt FROM routing_log WHERE user_key = ? ORDER BY at", (GRANDSON,)
        )
    finally:
        await router.close()
    assert held is not None and held.text == since
    assert router.counters["erasures_heard"] == 1
    assert [row[0] for row in rows] == ["", since]


async def test_forget_on_one_process_reaches_another_after_older_notices_were_cleared(
    seeded_db, embedder, monkeypatch
):
    """Notices are cleared after a day; the next erasure's notice is still read (its id is
    never one a process has read before)."""
    monkeypatch.setattr(erasure_watch, "RECHECK_S", 0.0)
    a, b = await open_router(seeded_db, embedder), await open_router(seeded_db, embedder)
    try:
        at = time.time() - 60
        await a.erase(Scope(GROUP, COUSIN))
        await b.route("早安", conv_key=GROUP, at=at, user_key=COUSIN)  # b reads that notice
        await b.retention.run(now=time.time() + 2 * 24 * 3600)  # a day later: cleared
        await b.route(CODING, conv_key=GROUP, at=at, user_key=GRANDSON)
        assert b.context.held(GROUP, GRANDSON) is not None
        await a.erase(Scope(GROUP, GRANDSON))  # /forget in a chat the other process serves
        follow_up = await b.route("why?", conv_key=GROUP, at=at + 5, user_key=GRANDSON)
    finally:
        await a.close()
        await b.close()
    assert follow_up.prior_category is None
    assert b.counters["erasures_heard"] == 2


def test_a_turn_since_an_erasure_keeps_no_quote_or_task_of_the_erased_turns(seeded_db, embedder):
    """Read late, an erasure still reaches into the turns made since: the task behind a
    reaction, and a quote under the words of the turn it reacted to."""

    async def run() -> tuple[object, object]:
        router = await open_router(seeded_db, embedder)
        try:
            context, erased_at = router.context, time.time()
            request = PreviousTurn("coding", erased_at - 30, CODING)
            reaction = PreviousTurn("casual", erased_at + 1, "nice", task_behind=request)
            context.remember(GROUP, reaction, GRANDSON)
            quoted = PreviousTurn(
                "coding", erased_at - 20, f"fix this for him\n\n{CODING}", own_words="fix this"
            )
            thanks = PreviousTurn("casual", erased_at + 2, "thanks!", task_behind=quoted)
            context.remember(GROUP, thanks, COUSIN)
            context.drop(GROUP, GRANDSON, publish=False, before=erased_at)
            return context.held(GROUP, GRANDSON), context.held(GROUP, COUSIN)
        finally:
            await router.close()

    grandson, cousin = asyncio.run(run())
    assert grandson is not None and grandson.text == "nice" and grandson.task_behind is None
    assert cousin is not None and cousin.task_behind is not None
    assert cousin.task_behind.text == "fix this" and CODING not in cousin.task_behind.text


async def test_a_running_bot_erases_the_exchanges_it_still_held_for_the_person(
    seeded_db, embedder, monkeypatch
):
    """Another process's erasure reaches the bot's conversation memory too: an exchange the
    bot had not written yet when the person was erased is erased once it is."""
    monkeypatch.setattr(erasure_watch, "RECHECK_S", 0.0)
    core = await open_core(seeded_db, embedder, None)
    router = core.router
    try:
        await core.memory.add_exchange(GROUP, "Grandson", "my secret plan", "an answer", GRANDSON)
        await core.memory.add_exchange(GROUP, "Cousin", "her question", "an answer", COUSIN)
        other = await open_database(make_config(seeded_db).database)  # as another process
        try:
            done = await erase(other, Scope(GROUP, GRANDSON))
            await announce_erasure(other, Scope(GROUP, GRANDSON), done.pool_hashes)
        finally:
            await other.close()
        if router.shared is not None:
            await router.shared.until(lambda: router.counters["erasures_heard"] == 1, HEARD_S)
        else:
            await router.erasures.check()
        await router.erasures.settled()
        kept = [turn.content for turn in await core.memory.history(GROUP)]
    finally:
        await core.close()
    assert kept == ["her question", "an answer"]


SQLITE_ONLY = ("test_an_erasure_read_late", "test_forget_on_one_process_reaches_another")


@pytest.fixture(autouse=True)
def _sqlite_only(request, database_backend):
    if database_backend is not None and request.node.name.startswith(SQLITE_ONLY):
        pytest.skip("SQLite only: on PostgreSQL an erasure is heard at once, not read")
