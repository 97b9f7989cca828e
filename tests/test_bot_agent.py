"""The agent with the real router and bundled model, talking through the real openai SDK to a
fake OpenAI-compatible server: routed models, "auto", usage, failures, memory."""

from __future__ import annotations

import asyncio
import json
import logging

import pytest

from bot.admin import Command
from bot.chat_user import ChatUser
from bot.incoming import Incoming
from bot.language import APOLOGIES
from bot.upstream import MISSING_HINT, Upstream
from router import EmptyMessageError, Secrets
from tests.bot_helpers import NO_SECRETS, log_rows, open_core, open_learning_core
from tests.fakes.groq_server import category_reply

MOM = ChatUser("telegram", 42, "Mom")
CODING = "Write a Python function that removes duplicates from a list but keeps the order"
GREETING = "Good morning everyone! Hope you all slept well"


@pytest.fixture
async def core(seeded_db, embedder, upstream):
    core = await open_core(seeded_db, embedder, upstream.base_url)
    yield core
    await core.close()


async def test_reply_comes_from_the_routed_model_and_usage_is_logged(core, upstream):
    for text in (GREETING, CODING):
        reply = await core.agent.handle("telegram:1", MOM, text)
        assert reply.ok and reply.decision is not None
        assert reply.text == f"[{reply.decision.model}] Mom: {text}"
    rows = await log_rows(core)
    assert [row["prompt"] for row in rows] == [GREETING, CODING]
    assert upstream.models == [core.config.models.for_tier(row["tier"]) for row in rows]
    assert all(row["prompt_tokens"] > 0 and row["completion_tokens"] > 0 for row in rows)


async def test_history_is_sent_and_stored(core, upstream):
    await core.agent.handle("telegram:1", MOM, "My name is Mom and I like tea")
    await core.agent.handle("telegram:2", MOM, "another conversation")
    await core.agent.handle("telegram:1", MOM, "What do I like?")
    last = upstream.requests[-1].body["messages"]
    assert last[0]["role"] == "system"
    assert [m["content"] for m in last[1:]] == [
        "Mom: My name is Mom and I like tea",
        "[" + upstream.requests[0].body["model"] + "] Mom: My name is Mom and I like tea",
        "Mom: What do I like?",
    ]


@pytest.mark.parametrize("max_turns", [1, 2, 3])
async def test_memory_keeps_max_turns_whole_exchanges(seeded_db, embedder, upstream, max_turns):
    core = await open_core(seeded_db, embedder, upstream.base_url, memory={"max_turns": max_turns})
    try:
        for n in range(5):
            await core.agent.handle("console:me", None, f"message number {n}")
        history = await core.memory.history("console:me")
        # max_turns counts exchanges: each question with its answer, none cut in half.
        assert [t.role for t in history] == ["user", "assistant"] * max_turns
        assert [t.content for t in history if t.role == "user"] == [
            f"message number {n}" for n in range(5 - max_turns, 5)
        ]
        # Older turns are deleted, not only hidden (once written behind the replies).
        assert await core.memory.flush()
        row = await core.router.conn.fetch_one("SELECT COUNT(*) FROM messages")
        assert row is not None and row[0] == 2 * max_turns
    finally:
        await core.close()


async def test_database_failure_costs_the_memory_not_the_reply(core, upstream):
    await core.agent.handle("telegram:1", MOM, "My name is Mom")
    assert await core.memory.flush()
    # The memory table is gone: reading the history fails, and storing the exchange (behind
    # the reply) is retried, then counted as dropped at the stop.
    await core.router.conn.execute("DROP TABLE messages")
    reply = await core.agent.handle("telegram:1", MOM, CODING)
    assert reply.ok and reply.text == f"[{reply.decision.model}] Mom: {CODING}"
    # Answered without history: only the system prompt and the new message went upstream.
    assert [m["role"] for m in upstream.requests[-1].body["messages"]] == ["system", "user"]
    assert core.counters["db_errors"] == 1
    await core.memory.close()
    assert core.counters["memory_rows_dropped"] == 1  # the one exchange, counted
    # The routing log is another table: the decision and its usage are still there.
    rows = await log_rows(core)
    assert rows[-1]["prompt"] == CODING and rows[-1]["prompt_tokens"] > 0


async def test_memory_keeps_to_the_token_budget(seeded_db, embedder, upstream):
    core = await open_core(
        seeded_db, embedder, upstream.base_url, memory={"max_tokens": 400, "system_prompt": "Hi"}
    )
    try:
        for n in range(6):
            await core.agent.handle("console:me", None, f"{n} " + "word " * 80)
        history = await core.memory.history("console:me")
        assert 0 < len(history) < 12
        assert history[0].role == "user" and history[-1].content.startswith("[")
    finally:
        await core.close()


async def test_auto_model_skips_routing_and_asks_for_auto(seeded_db, embedder, upstream):
    core = await open_core(seeded_db, embedder, upstream.base_url, upstream={"model": "auto"})
    try:
        assert core.router.pool is None and not core.router.routes_locally
        for text in (GREETING, CODING, "晚饭几点？"):
            reply = await core.agent.handle("discord:9", None, text)
            assert reply.ok and reply.decision is None and reply.model == "auto"
        assert upstream.models == ["auto", "auto", "auto"]
        assert await log_rows(core) == []
    finally:
        await core.close()


async def test_session_and_speaker_keys_go_only_to_a_routing_proxy(seeded_db, embedder, upstream):
    routed = await open_core(seeded_db, embedder, upstream.base_url)
    try:
        await routed.agent.handle("telegram:1", MOM, GREETING)
    finally:
        await routed.close()
    auto = await open_core(seeded_db, embedder, upstream.base_url, upstream={"model": "auto"})
    try:
        await auto.agent.handle("telegram:1", MOM, GREETING)
    finally:
        await auto.close()
    plain, proxy = [seen.headers for seen in upstream.requests]
    # A chat id, a person's id: none of a plain provider's business.
    assert "x-session-key" not in plain and "x-crabbot-speaker" not in plain
    assert proxy["x-session-key"] == "telegram:1"
    assert proxy["x-crabbot-speaker"] == "telegram:42"  # Mom by her id, whatever her name


async def test_a_console_name_outside_ascii_reaches_a_routing_proxy_percent_encoded(
    seeded_db, embedder, upstream
):
    """A header carries ASCII only: 奶奶 at the terminal still gets her answer, and the proxy a
    key for her that it can keep and erase her words under."""
    core = await open_core(seeded_db, embedder, upstream.base_url, upstream={"model": "auto"})
    try:
        reply = await core.agent.handle("console:family", ChatUser("console", "奶奶", "奶奶"), "hi")
    finally:
        await core.close()
    assert reply.ok
    assert upstream.requests[0].headers["x-crabbot-speaker"] == "console:%E5%A5%B6%E5%A5%B6"


async def test_fixed_model_does_no_routing(seeded_db, embedder, upstream):
    # A Groq key is present on purpose: a fixed model must not cost a categorizer call.
    secrets = Secrets(groq_api_key="gsk-unused", openai_api_key=None, openai_base_url=None)
    core = await open_core(
        seeded_db, embedder, upstream.base_url, secrets=secrets, upstream={"model": "my-model"}
    )
    try:
        assert core.router.categorizer is None and core.router.pool is None
        for text in (GREETING, CODING):
            reply = await core.agent.handle("discord:9", MOM, text)
            assert reply.ok and reply.decision is None and reply.model == "my-model"
            assert reply.text == f"[my-model] Mom: {text}"
        assert upstream.models == ["my-model", "my-model"]
        assert await log_rows(core) == []  # no decision logged for a model nobody chose
        stats = await core.admin.stats_text()
        assert "every reply uses my-model; routing is off in config" in stats
        assert "routing happens upstream" not in stats
        for seen in upstream.requests:
            assert "x-session-key" not in seen.headers
            assert "x-crabbot-speaker" not in seen.headers
    finally:
        await core.close()


@pytest.mark.parametrize("answer", ["", "   ", "\n\t \n"])
async def test_blank_upstream_answer_gets_an_apology(core, upstream, answer):
    upstream.reply = lambda body: answer
    reply = await core.agent.handle("telegram:5", MOM, "Can you help me?")
    assert reply.text == APOLOGIES["en"] and reply.error == "upstream: empty answer"
    assert await core.memory.history("telegram:5") == []


@pytest.mark.parametrize(
    ("status", "text", "language"),
    [
        (500, "Can you help me with my homework?", "en"),
        (429, "今天天气怎么样？", "zh-Hans"),
        (503, "今日は何を食べましょうか", "ja"),
    ],
)
async def test_upstream_error_apologises_records_and_recovers(
    core, upstream, status, text, language
):
    upstream.fail_status, upstream.fail_count = status, 1
    reply = await core.agent.handle("telegram:5", MOM, text)
    assert reply.text == APOLOGIES[language]
    assert reply.error == f"upstream: HTTP {status}"
    (row,) = await log_rows(core)
    assert row["error"].endswith(f"upstream: HTTP {status}") and row["prompt_tokens"] is None
    assert core.counters["upstream_errors"] == 1
    assert "upstream_errors" not in core.router.counters  # the bot's failure, not the router's
    assert await core.memory.history("telegram:5") == []

    again = await core.agent.handle("telegram:5", MOM, text)
    assert again.ok and again.text.endswith(text)


async def test_refused_connection_apologises(seeded_db, embedder, upstream):
    url = upstream.base_url
    await upstream.stop()
    core = await open_core(seeded_db, embedder, url)
    try:
        reply = await core.agent.handle("console:me", None, "are you there?")
        assert reply.text == APOLOGIES["en"] and reply.error == "upstream: connection failed"
        (row,) = await log_rows(core)
        assert row["error"].endswith("upstream: connection failed")
    finally:
        await core.close()


async def test_timeout_apologises(seeded_db, embedder, upstream):
    release = asyncio.Event()

    async def never(body):
        await release.wait()
        return "too late"

    upstream.reply = never
    core = await open_core(seeded_db, embedder, upstream.base_url, upstream={"timeout_s": 0.5})
    try:
        reply = await core.agent.handle("console:me", None, "hello?")
        assert reply.error == "upstream: timeout" and reply.text == APOLOGIES["en"]
    finally:
        release.set()
        await core.close()


async def test_no_upstream_still_routes(seeded_db, embedder):
    core = await open_core(seeded_db, embedder, None)
    try:
        assert not core.upstream.configured
        reply = await core.agent.handle("console:me", None, CODING)
        assert reply.text is None and reply.decision is not None
        rows = await log_rows(core)
        assert [(row["decision_id"], row["outcome"]) for row in rows] == [
            (reply.decision.id, "routed")
        ]
        assert "OPENAI_API_KEY" in MISSING_HINT
    finally:
        await core.close()


async def test_empty_message_is_refused(core):
    with pytest.raises(EmptyMessageError):
        await core.agent.handle("console:me", None, "   ")


def test_environment_is_honoured_when_config_names_no_upstream(monkeypatch):
    from bot.config import UpstreamSettings

    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-from-env")
    upstream = Upstream(UpstreamSettings(), Secrets())
    assert upstream.configured and upstream.client is not None
    assert str(upstream.client.base_url) == "http://127.0.0.1:9/v1/"
    assert upstream.client.api_key == "sk-from-env"
    configured = Upstream(UpstreamSettings(base_url="http://127.0.0.1:8/v1"), NO_SECRETS)
    assert configured.configured and configured.client.api_key == "not-needed"
    assert not Upstream(UpstreamSettings(), NO_SECRETS).configured


async def test_conversations_run_at_once_each_in_order(core, upstream):
    """50 messages in 10 conversations, all at once: each reply answers its own message, and
    each conversation's history shows its messages in the order they were sent."""
    order = list(range(50))

    async def jittered(body):
        # Answer out of arrival order, so ordering comes from the agent, not from luck.
        await asyncio.sleep(0.001 * (hash(body["messages"][-1]["content"]) % 7))
        return f"re: {body['messages'][-1]['content']}"

    upstream.reply = jittered
    replies = await asyncio.gather(
        *(
            core.agent.handle(f"telegram:{n % 10}", None, f"conv {n % 10} msg {n // 10}")
            for n in order
        )
    )
    for n, reply in zip(order, replies, strict=True):
        assert reply.text == f"re: conv {n % 10} msg {n // 10}"
    for conv in range(10):
        history = await core.memory.history(f"telegram:{conv}")
        assert [t.content for t in history if t.role == "user"] == [
            f"conv {conv} msg {m}" for m in range(5)
        ]


async def test_streamed_reply_grows_chunk_by_chunk_and_usage_is_logged(core, upstream):
    seen: list[str] = []
    reply = await core.agent.handle("telegram:1", MOM, CODING, on_text=seen.append)
    assert upstream.requests[0].body["stream"] is True
    assert upstream.requests[0].body["stream_options"] == {"include_usage": True}
    answer = f"[{reply.decision.model}] Mom: {CODING}"
    assert reply.ok and reply.text == answer
    # One call a word, each the answer so far.
    assert len(seen) == len(answer.split()) and seen[-1] == answer
    assert all(answer.startswith(part) for part in seen)
    (row,) = await log_rows(core)
    assert row["prompt_tokens"] > 0 and row["completion_tokens"] > 0


async def test_a_server_that_refuses_stream_options_still_streams_every_answer(
    core, upstream, caplog
):
    """An OpenAI-compatible server that predates `stream_options` (Azure's older API versions)
    refuses it with a 400: the answer still streams, asked again without it, later answers do
    not ask for it again, and the bot says so once, in its log and in /routing stats."""
    upstream.refuse_stream_options = True
    seen: list[str] = []
    with caplog.at_level(logging.WARNING, logger="bot.upstream"):
        first = await core.agent.handle("telegram:1", MOM, CODING, on_text=seen.append)
        second = await core.agent.handle("telegram:1", MOM, GREETING)
    assert first.ok and first.decision is not None and second.ok
    assert first.text == f"[{first.decision.model}] Mom: {CODING}" and seen[-1] == first.text
    assert ["stream_options" in request.body for request in upstream.requests] == [
        True,
        False,
        False,
    ]
    assert sum("refuses stream_options" in record.message for record in caplog.records) == 1
    # No count came: the rows say unknown, not a free answer.
    rows = await log_rows(core)
    assert [(row["outcome"], row["prompt_tokens"]) for row in rows] == [("completed", None)] * 2
    assert "stream usage refused 1" in await core.admin.stats_text()


async def test_an_error_that_only_quotes_stream_options_is_no_refusal(core, upstream):
    """A 400 whose message quotes the words, "stream_options" among them, fails again without
    it: that message gets the apology, and later answers still ask for token counts."""
    upstream.fail_status, upstream.fail_count, upstream.echo_secrets = 400, 2, True
    failed = await core.agent.handle("telegram:1", MOM, "what does stream_options do")
    answered = await core.agent.handle("telegram:1", MOM, GREETING)
    assert not failed.ok and answered.ok
    assert ["stream_options" in request.body for request in upstream.requests] == [
        True,
        False,
        True,
    ]
    assert not core.counters["stream_usage_refused"]


async def test_streamed_reply_cut_off_keeps_what_was_shown_and_apologises(core, upstream):
    upstream.reply = lambda body: "First part of the answer and then the rest of it"
    upstream.cut_stream_after = 4
    seen: list[str] = []
    reply = await core.agent.handle("telegram:1", MOM, "Can you help me?", on_text=seen.append)
    assert seen[-1] == "First part of the"
    assert reply.text == f"First part of the\n\n{APOLOGIES['en']}" and not reply.ok
    assert core.counters["upstream_errors"] == 1
    (row,) = await log_rows(core)
    assert row["error"] and row["prompt_tokens"] is None
    assert await core.memory.history("telegram:1") == []


async def test_stream_off_asks_for_the_whole_answer(seeded_db, embedder, upstream):
    core = await open_core(seeded_db, embedder, upstream.base_url, upstream={"stream": False})
    try:
        seen: list[str] = []
        reply = await core.agent.handle("telegram:1", MOM, GREETING, on_text=seen.append)
        assert "stream" not in upstream.requests[0].body and seen == []
        assert reply.ok and reply.text.endswith(GREETING)
        (row,) = await log_rows(core)
        assert row["prompt_tokens"] > 0
    finally:
        await core.close()


async def test_a_history_read_held_up_by_the_database_costs_the_memory_not_the_reply(
    core, upstream, database_backend
):
    """A lock held elsewhere on the memory table (an operator's VACUUM FULL, a migration) holds
    the history read: the reply goes out without the history; the replies after it do not wait
    the full budget again while the database still does not answer; once the lock is gone the
    first held read answers and ends that; and the next reply has the history again."""
    if database_backend is None:
        pytest.skip("PostgreSQL: SQLite's readers are never held by a lock in WAL mode")
    await core.agent.handle("telegram:1", MOM, "My name is Mom")
    assert await core.memory.flush()
    locked, done = asyncio.Event(), asyncio.Event()

    async def hold_the_table() -> None:
        async with core.router.conn.transaction() as conn:
            await conn.execute("LOCK TABLE messages IN ACCESS EXCLUSIVE MODE")
            locked.set()
            await done.wait()

    holder = asyncio.create_task(hold_the_table())
    await locked.wait()
    try:  # bounded: a reply that waits for the lock would otherwise wait for ever here
        reply = await asyncio.wait_for(core.agent.handle("telegram:1", MOM, CODING), 60)
        # The full budget is now an hour: a reply that took it would not come back in time.
        core.agent.history_wait.full_s = 3600.0
        again = await asyncio.wait_for(core.agent.handle("telegram:1", MOM, GREETING), 60)
    finally:
        done.set()
        await holder
    # The first timed-out read was left running: once the lock is gone it answers, and the
    # breaker closes before any other reply has to find out.
    await core.agent.settle()
    assert not core.agent.history_wait.failing
    assert reply.ok and reply.text == f"[{reply.decision.model}] Mom: {CODING}"
    assert [m["role"] for m in upstream.requests[-2].body["messages"]] == ["system", "user"]
    assert again.ok and [m["role"] for m in upstream.requests[-1].body["messages"]] == [
        "system",
        "user",
    ]
    assert core.counters["db_timeouts"] == 2
    await core.agent.handle("telegram:1", MOM, "what's my name?")
    sent = [m["content"] for m in upstream.requests[-1].body["messages"]]
    assert any("My name is Mom" in str(content) for content in sent), sent
    assert not core.agent.history_wait.failing


async def test_a_message_with_a_nul_character_is_remembered(core, upstream):
    """PostgreSQL's text holds no NUL (SQLite's does): the exchange is kept, the NUL shown as
    U+FFFD there, not refused and lost."""
    await core.agent.handle("telegram:1", MOM, "My name is\x00 Mom")
    assert await core.memory.flush()
    await core.agent.handle("telegram:1", MOM, "what's my name?")
    sent = [str(m["content"]) for m in upstream.requests[-1].body["messages"]]
    assert any("My name is" in content for content in sent), sent
    assert not core.counters["db_errors"]


async def test_a_message_with_a_lone_surrogate_is_answered_and_kept(core, upstream):
    """A terminal's undecodable bytes arrive as lone surrogates, which no UTF-8 encoder takes:
    the message is answered, logged and remembered with U+FFFD in their place, not lost."""
    reply = await core.agent.handle("console:me", None, "why \ud800 is this")
    assert reply.ok
    assert upstream.requests[-1].body["messages"][-1]["content"].endswith("why \ufffd is this")
    assert await core.memory.flush()
    history = await core.memory.history("console:me")
    assert history[0].content == "why \ufffd is this"
    (row,) = await log_rows(core)
    assert row["prompt"] == "why \ufffd is this"


async def test_the_categorizer_reads_the_bot_s_answer_to_the_speaker_s_previous_message(
    seeded_db, embedder, upstream, groq_server
):
    """In shadow mode the LLM names every message's task: beside a follow-up it reads the
    speaker's previous message and the bot's answer to it (from memory), not the answer to
    someone else who spoke since."""
    groq_server.respond = lambda _r: category_reply("simple_lookup", 0.9)
    core = await open_learning_core(seeded_db, embedder, upstream.base_url, groq_server.base_url)
    dad = ChatUser("telegram", 43, "Dad")
    tip = "whats a 15% tip on 84.50"
    try:
        asked = await core.agent.handle("telegram:-5", MOM, tip)
        dads_tip = await core.agent.handle("telegram:-5", dad, tip)  # the same words: his own
        await core.agent.handle("telegram:-5", dad, "good morning all")
        await core.agent.handle("telegram:-5", MOM, "ok so 97.18")
        await core.agent.handle("telegram:-5", dad, "coffee anyone")
    finally:
        await core.close()
    moms, dads = (groq_server.requests[i]["messages"][1]["content"] for i in (3, 4))
    assert asked.text != dads_tip.text  # the fake model's answer names who asked
    assert f"[The bot's answer to it: {json.dumps(asked.text)}]" in moms
    assert "15% tip" not in dads and "answer to it: " + json.dumps(asked.text) not in dads


async def test_reset_keeps_a_message_sent_after_it_and_drops_one_sent_before(core):
    """What /reset erases is by when messages came: one still waiting its turn from before the
    reset keeps nothing, one that came right after it (queued behind the same answer, as a
    poll's batch dispatches them) is kept."""
    conv, before, after = "telegram:42", "remember: the wifi password is tulip", "my name is Ann"
    reading, go = asyncio.Event(), asyncio.Event()

    async def held() -> Incoming:  # an earlier message, its photo still downloading
        reading.set()
        await go.wait()
        return Incoming(GREETING)

    first = asyncio.create_task(core.agent.handle(conv, MOM, held))
    await reading.wait()
    queued = asyncio.create_task(core.agent.handle(conv, MOM, before))
    reset = asyncio.create_task(core.admin.answer(MOM, conv, Command("reset")))
    later = asyncio.create_task(core.agent.handle(conv, MOM, after))
    await reset  # by now the message after it has come and waits its turn
    go.set()
    await asyncio.gather(first, queued, later)
    await core.memory.flush()
    kept = [turn.content for turn in await core.memory.history(conv)]
    assert kept[0] == after and len(kept) == 2


async def test_a_request_sent_before_reset_is_not_the_context_after_it(core):
    """A request still waiting its turn when /reset comes is answered, but the conversation
    starts over: "make it faster" after it is not carried to its task."""
    reading, go = asyncio.Event(), asyncio.Event()

    async def held() -> Incoming:
        reading.set()
        await go.wait()
        return Incoming(CODING)

    await core.agent.handle("telegram:1", MOM, CODING)  # the same, with no /reset between
    carried = await core.agent.handle("telegram:1", MOM, "make it faster")
    first = asyncio.create_task(core.agent.handle("telegram:2", MOM, held))
    await reading.wait()
    await core.admin.answer(MOM, "telegram:2", Command("reset"))
    go.set()
    answered = await first
    after = await core.agent.handle("telegram:2", MOM, "make it faster")
    assert answered.ok and answered.decision is not None and answered.decision.tier == "strong"
    assert carried.decision is not None and carried.decision.tier == "strong"
    assert after.decision is not None and after.decision.tier != "strong"


async def test_no_vector_is_left_of_a_message_sent_before_forget_and_routed_after(core):
    """/forget empties the embedding cache; a message of the person's still waiting its turn is
    embedded after that, and its vector goes too once routing sees it was erased meanwhile."""
    words = "my passport number is X1234567, write a packing list for Osaka"
    reading, go = asyncio.Event(), asyncio.Event()

    async def held() -> Incoming:
        reading.set()
        await go.wait()
        return Incoming(words)

    answering = asyncio.create_task(core.agent.handle("telegram:3", MOM, held))
    await reading.wait()
    await core.admin.answer(MOM, "telegram:3", Command("forget"))
    go.set()
    answered = await answering
    assert answered.ok
    assert core.router.embedder is not None and core.router.embedder.cached(words) is None
