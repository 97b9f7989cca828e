"""Telegram end to end: a real python-telegram-bot Application polls a fake Bot API server on
127.0.0.1, the real router routes, and the real openai SDK asks a fake upstream."""

from __future__ import annotations

import asyncio

import pytest

from bot.adapters.telegram_markdown import convert
from bot.admin import COMMANDS, HELP, REFUSAL
from bot.language import APOLOGIES
from router.store.settings import get_setting
from tests.bot_helpers import TELEGRAM_ADMIN, VERBATIM, log_rows
from tests.fakes.telegram_api import BOT_ID, BOT_USERNAME, FakeTelegram, utf16_len
from tests.telegram_helpers import running

GROUP = -1001
CODING = "Write a Python function that removes duplicates from a list but keeps the order"
POEM = "Write a short poem about autumn leaves for grandma's birthday card"
NOT_ADMIN = 42


@pytest.fixture
async def telegram():
    server = await FakeTelegram().start()
    yield server
    await server.stop()


async def test_group_mention_is_answered_by_the_routed_model(
    seeded_db, embedder, upstream, telegram
):
    async with running(seeded_db, embedder, upstream, telegram) as core:
        message_id = await telegram.push_message(GROUP, CODING, mention=True)
        await telegram.wait_until(lambda: len(telegram.texts(GROUP)) == 1)
        (row,) = await log_rows(core)
    assert row["conv_key"] == f"telegram:{GROUP}" and row["prompt"] == CODING
    assert upstream.models == [core.config.models.for_tier(row["tier"])]
    (sent,) = telegram.sent(GROUP)
    assert sent["text"] == f"[{row['model']}] Mom: {CODING}"
    assert sent["reply_parameters"]["message_id"] == message_id
    assert telegram.sent(GROUP, "sendChatAction")[0]["action"] == "typing"
    (commands,) = telegram.sent(method="setMyCommands")
    assert [c["command"] for c in commands["commands"]] == list(COMMANDS)


async def test_only_messages_for_the_bot_are_answered(seeded_db, embedder, upstream, telegram):
    async with running(seeded_db, embedder, upstream, telegram) as core:
        await telegram.push_message(GROUP, "Dinner at 7 tonight, everyone?")
        await telegram.push_message(GROUP, "What is 17 times 23?", reply_to_bot=True)
        await telegram.push_message(55, "hello crab", chat_type="private")
        await telegram.wait_until(
            lambda: len(telegram.texts(GROUP)) == 1 and len(telegram.texts(55)) == 1
        )
        rows = await log_rows(core)
    # The unaddressed message came first in the same conversation: had it been answered, its
    # reply would have been sent before the one waited for.
    # The router reads the reply to the bot by its words (no answer in memory is quoted: no
    # request to read as its context); the model gets the quote under them.
    assert sorted(row["prompt"] for row in rows) == ["What is 17 times 23?", "hello crab"]
    asked = [seen.body["messages"][-1]["content"] for seen in upstream.requests]
    assert "Mom: What is 17 times 23?\n\n(replying to crabbot:)\n> an earlier answer" in asked
    assert len(upstream.requests) == 2


async def test_an_anonymous_admin_speaks_as_the_group_under_their_title(
    seeded_db, embedder, upstream, telegram
):
    """Telegram puts the same placeholder account in `from` for every anonymous admin of every
    group: the group is who spoke, named by the admin's custom title."""
    other_group = GROUP - 1
    async with running(seeded_db, embedder, upstream, telegram) as core:
        await telegram.push_message(GROUP, CODING, mention=True, as_group="Grandpa")
        await telegram.wait_until(lambda: len(telegram.texts(GROUP)) == 1)
        await telegram.push_message(other_group, "hi there", mention=True, as_group="")
        await telegram.wait_until(lambda: len(telegram.texts(other_group)) == 1)
        rows = await log_rows(core)
    assert [row["user_key"] for row in rows] == [f"telegram:{GROUP}", f"telegram:{other_group}"]
    assert telegram.texts(GROUP) == [f"[{rows[0]['model']}] Grandpa: {CODING}"]
    assert telegram.texts(other_group) == [f"[{rows[1]['model']}] Family: hi there"]


async def test_a_reply_to_an_anonymous_admin_quotes_them_by_their_title(
    seeded_db, embedder, upstream, telegram
):
    async with running(seeded_db, embedder, upstream, telegram):
        await telegram.push_message(
            GROUP, "is that right?", mention=True, reply_as_group="Grandpa", replied_text="2+2=5"
        )
        await telegram.wait_until(lambda: len(telegram.texts(GROUP)) == 1)
    asked = upstream.requests[0].body["messages"][-1]["content"]
    assert asked == "Mom: is that right?\n\n(replying to Grandpa:)\n> 2+2=5"


async def test_routing_mode_is_admin_only_and_survives_a_rebuild(
    seeded_db, embedder, upstream, telegram
):
    async with running(seeded_db, embedder, upstream, telegram, mode="shadow") as core:
        await core.router.set_mode("shadow")  # the seeded database stored "live"
        await telegram.push_message(GROUP, "/routing mode live", user_id=NOT_ADMIN)
        await telegram.wait_until(lambda: len(telegram.texts(GROUP)) == 1)
        assert telegram.texts(GROUP) == [REFUSAL]
        assert core.router.mode == "shadow"
        assert await get_setting(core.router.conn, "routing_mode") == "shadow"

        await telegram.push_message(GROUP, "/routing mode fast", user_id=TELEGRAM_ADMIN)
        await telegram.push_message(GROUP, "/routing mode live", user_id=TELEGRAM_ADMIN)
        await telegram.wait_until(lambda: len(telegram.texts(GROUP)) == 3)
        assert telegram.texts(GROUP)[1].startswith("usage: /routing")
        assert telegram.texts(GROUP)[2] == "routing mode: shadow → live"
        assert core.router.mode == "live"

    # A new process: config still says shadow, the database says live.
    async with running(seeded_db, embedder, upstream, telegram, mode="shadow") as core:
        assert core.router.mode == "live"
        await telegram.push_message(GROUP, "/routing stats", user_id=TELEGRAM_ADMIN)
        await telegram.wait_until(lambda: len(telegram.texts(GROUP)) == 4)
    stats = telegram.texts(GROUP)[3]
    assert "mode live · map v2 · pool " in stats and "all time" in stats


async def test_long_reply_arrives_in_three_messages(seeded_db, embedder, upstream, telegram):
    paragraph = "A sentence about the family trip to the mountains. " * 9
    long_text = "\n\n".join(f"{n}. {paragraph.strip()}" for n in range(20))[:9000]
    assert len(long_text) == 9000
    upstream.reply = lambda body: long_text
    async with running(seeded_db, embedder, upstream, telegram):
        await telegram.push_message(77, "Tell me a long story", chat_type="private")
        await telegram.wait_until(lambda: len(telegram.texts(77)) == 3)
    pieces = telegram.texts(77)
    assert len(pieces) == 3 and all(len(piece) <= 4096 for piece in pieces)
    assert all(piece.endswith(".") for piece in pieces[:-1])  # cut at sentence ends
    assert "".join(pieces).replace(" ", "").replace("\n", "") == long_text.replace(" ", "").replace(
        "\n", ""
    )


async def test_a_long_reply_full_of_emoji_arrives_whole(seeded_db, embedder, upstream, telegram):
    """Telegram counts a message in UTF-16 units, and an emoji is two: a 4,500-character answer
    of CJK and emoji (5,500 units) arrives in pieces Telegram takes, none refused, none lost."""
    answer = "今天的计划 😀🎉 " * 500
    upstream.reply = lambda body: answer
    async with running(seeded_db, embedder, upstream, telegram):
        await telegram.push_message(77, "plan my day", chat_type="private")
        await telegram.wait_until(lambda: "".join(telegram.texts(77)).count("🎉") == 500)
    pieces = telegram.texts(77)
    assert len(pieces) == 2 and all(utf16_len(piece) <= 4096 for piece in pieces)
    assert "".join(pieces).replace(" ", "") == answer.replace(" ", "")


async def test_an_unknown_command_gets_an_answer_where_it_is_meant_for_the_bot(
    seeded_db, embedder, upstream, telegram
):
    """/weather is no command of the bot's: in a private chat, or named to the bot in a group,
    it is told so (as on Discord); a group's bare /weather may be another bot's and is left."""
    unknown = "Unknown command /weather, try /help."
    async with running(seeded_db, embedder, upstream, telegram):
        await telegram.push_message(77, "/weather tomorrow in Taipei", chat_type="private")
        await telegram.push_message(GROUP, "/weather tomorrow")
        await telegram.push_message(GROUP, f"/weather@{BOT_USERNAME} tomorrow")
        await telegram.wait_until(lambda: telegram.texts(77) == [unknown])
        await telegram.wait_until(lambda: telegram.texts(GROUP) == [unknown])
        await telegram.push_message(77, "hello", chat_type="private")
        await telegram.wait_until(lambda: len(telegram.texts(77)) == 2)
    assert upstream.models and len(telegram.texts(GROUP)) == 1


async def test_upstream_500_gets_an_apology_and_the_next_message_works(
    seeded_db, embedder, upstream, telegram
):
    upstream.fail_status, upstream.fail_count = 500, 1
    async with running(seeded_db, embedder, upstream, telegram) as core:
        await telegram.push_message(GROUP, "晚饭吃什么好呢？", mention=True)
        await telegram.wait_until(lambda: len(telegram.texts(GROUP)) == 1)
        await telegram.push_message(GROUP, "Good morning!", mention=True)
        await telegram.wait_until(lambda: len(telegram.texts(GROUP)) == 2)
        rows = await log_rows(core)
    apology, answer = telegram.texts(GROUP)
    assert apology == APOLOGIES["zh-Hans"]
    assert answer.endswith("Mom: Good morning!")
    assert rows[0]["error"].endswith("upstream: HTTP 500") and rows[1]["prompt_tokens"] > 0


MARKDOWN = """Here is **the plan**:

- buy `rice`
- read [the recipe](https://example.org/rice)

```python
print("2 * 3 =", 2 * 3)  # my_file
```"""


async def test_markdown_arrives_formatted_as_entities(seeded_db, embedder, upstream, telegram):
    upstream.reply = lambda body: MARKDOWN
    async with running(seeded_db, embedder, upstream, telegram):
        await telegram.push_message(88, "what is the plan", chat_type="private")
        await telegram.wait_until(lambda: len(telegram.texts(88)) == 1)
    (sent,) = telegram.sent(88)
    # No parse mode to get wrong: the markers are gone and entities carry the formatting.
    assert "parse_mode" not in sent and "**" not in sent["text"] and "```" not in sent["text"]
    assert (
        sent["text"].startswith("Here is the plan:") and 'print("2 * 3 =", 2 * 3)' in sent["text"]
    )
    kinds = {entity["type"]: entity for entity in sent["entities"]}
    assert set(kinds) == {"bold", "code", "text_link", "pre"}
    assert kinds["text_link"]["url"] == "https://example.org/rice"
    assert kinds["pre"]["language"] == "python"


def spans(sent: dict) -> dict[str, list[str]]:
    """Each entity type of a sent message, with the text it covers."""
    text = sent["text"].encode("utf-16-le")
    found: dict[str, list[str]] = {}
    for entity in sent.get("entities", []):
        covered = text[2 * entity["offset"] : 2 * (entity["offset"] + entity["length"])]
        found.setdefault(entity["type"], []).append(covered.decode("utf-16-le"))
    return found


async def test_a_refused_link_becomes_text_and_the_rest_stays_formatted(
    seeded_db, embedder, upstream, telegram
):
    answer = "Everything is in [the notes](notes.md), **section 2**."
    upstream.reply = lambda body: answer
    async with running(seeded_db, embedder, upstream, telegram) as core:
        await telegram.push_message(88, "where is it", chat_type="private")
        await telegram.wait_until(lambda: len(telegram.texts(88)) == 2)
    first, second = telegram.sent(88)
    assert spans(first) == {"text_link": ["the notes"], "bold": ["section 2"]}
    # Telegram refused the relative link: it went again with the link as plain text, the bold
    # kept, and neither Markdown markers nor the URL showing.
    assert second["text"] == "Everything is in the notes, section 2."
    assert spans(second) == {"bold": ["section 2"]}
    assert telegram.shown(88) == ["Everything is in the notes, section 2."]
    assert core.counters["markdown_fallbacks"] == 1


async def test_only_the_links_telegram_refuses_lose_their_link(
    seeded_db, embedder, upstream, telegram
):
    answer = (
        "See [the guide](https://example.org/guide), [my notes](/home/mom/notes.md) and "
        "[the list](./list.md); *quickly*."
    )
    upstream.reply = lambda body: answer
    async with running(seeded_db, embedder, upstream, telegram) as core:
        await telegram.push_message(GROUP, "where?", mention=True)
        await telegram.wait_until(lambda: len(telegram.shown(GROUP)) == 1)
    final = telegram.sent(GROUP)[-1]
    assert final["text"] == "See the guide, my notes and the list; quickly."
    # Each refusal named one URL; each cost that link only.
    assert spans(final) == {"text_link": ["the guide"], "italic": ["quickly"]}
    assert final["entities"][0]["url"] == "https://example.org/guide"
    assert len(telegram.sent(GROUP)) == 3
    assert core.counters["markdown_fallbacks"] == 1


@pytest.mark.parametrize("answer", VERBATIM)
async def test_every_character_outside_markdown_reaches_the_chat(
    seeded_db, embedder, upstream, telegram, answer
):
    upstream.reply = lambda body: answer
    async with running(seeded_db, embedder, upstream, telegram):
        await telegram.push_message(88, "explain", chat_type="private")
        await telegram.wait_until(lambda: len(telegram.shown(88)) == 1)
    assert telegram.shown(88) == [answer]


async def test_angle_brackets_survive_around_formatting(seeded_db, embedder, upstream, telegram):
    answer = "**Fix:** `xs: list[int]` is fine, but List<int> is Java; a<b **and** b>c 🦀"
    upstream.reply = lambda body: answer
    async with running(seeded_db, embedder, upstream, telegram):
        await telegram.push_message(88, "explain", chat_type="private")
        await telegram.wait_until(lambda: len(telegram.shown(88)) == 1)
    (sent,) = telegram.sent(88)
    assert sent["text"] == "Fix: xs: list[int] is fine, but List<int> is Java; a<b and b>c 🦀"
    assert spans(sent) == {"bold": ["Fix:", "and"], "code": ["xs: list[int]"]}


async def test_forum_topics_are_separate_conversations_and_reset_is_local(
    seeded_db, embedder, upstream, telegram
):
    async with running(seeded_db, embedder, upstream, telegram) as core:
        await telegram.push_message(GROUP, "hi in topic 7", mention=True, thread_id=7)
        await telegram.push_message(GROUP, "hi in topic 9", mention=True, thread_id=9)
        await telegram.wait_until(lambda: len(telegram.texts(GROUP)) == 2)
        await telegram.push_message(GROUP, "/reset", thread_id=7, user_id=NOT_ADMIN)
        await telegram.wait_until(lambda: len(telegram.texts(GROUP)) == 3)
        assert await core.memory.history(f"telegram:{GROUP}:7") == []
        assert len(await core.memory.history(f"telegram:{GROUP}:9")) == 2
        rows = await log_rows(core)
    assert {row["conv_key"] for row in rows} == {f"telegram:{GROUP}:7", f"telegram:{GROUP}:9"}
    assert (
        telegram.texts(GROUP)[2] == "Forgot this conversation (2 messages) and its routing context."
    )
    assert {sent["message_thread_id"] for sent in telegram.sent(GROUP)} == {7, 9}


async def test_fifty_messages_in_ten_chats_reach_the_right_chat_in_order(
    seeded_db, embedder, upstream, telegram
):
    async def jittered(body):
        # Answer out of arrival order, so the order seen comes from the bot, not from luck.
        await asyncio.sleep(0.001 * (hash(body["messages"][-1]["content"]) % 7))
        return f"re: {body['messages'][-1]['content']}"

    upstream.reply = jittered
    chats = range(101, 111)
    async with running(seeded_db, embedder, upstream, telegram):
        for turn in range(5):
            for chat in chats:
                await telegram.push_message(chat, f"chat {chat} message {turn}", user_id=chat)
        await telegram.wait_until(lambda: len(telegram.texts()) == 50, timeout=120)
    for chat in chats:
        assert telegram.texts(chat) == [f"re: Mom: chat {chat} message {n}" for n in range(5)]
    assert BOT_ID not in {params.get("chat_id") for _, params in telegram.calls}


async def test_reply_to_a_message_deleted_meanwhile_still_goes_out(
    seeded_db, embedder, upstream, telegram
):
    async with running(seeded_db, embedder, upstream, telegram):
        message_id = await telegram.push_message(GROUP, CODING, mention=True)
        telegram.deleted.add((GROUP, message_id))  # deleted before the answer is ready
        await telegram.wait_until(lambda: len(telegram.sent(GROUP)) == 1)
    (sent,) = telegram.sent(GROUP)
    assert sent["reply_parameters"] == {
        "message_id": message_id,
        "allow_sending_without_reply": True,
    }
    assert sent["text"].endswith(CODING)


async def test_a_held_typing_indicator_does_not_hold_the_reply(
    seeded_db, embedder, upstream, telegram
):
    """AIORateLimiter may queue a chat action behind the group's limit; the reply must not
    wait for it. Here the Bot API holds the typing call; the reply goes out meanwhile."""
    released = telegram.chat_actions_released = asyncio.Event()

    async def once_typing_is_held(body):
        await telegram.wait_until(lambda: telegram.held_chat_actions == 1, timeout=30)
        return f"re: {body['messages'][-1]['content']}"

    upstream.reply = once_typing_is_held
    try:
        async with running(seeded_db, embedder, upstream, telegram):
            await telegram.push_message(GROUP, CODING, mention=True)
            await telegram.wait_until(lambda: len(telegram.texts(GROUP)) == 1, timeout=30)
            # The reply went out while the typing call was still held.
            assert telegram.held_chat_actions == 1
    finally:
        released.set()  # so a failing run can shut down
    assert telegram.texts(GROUP) == [f"re: Mom: {CODING}"]


TRACEBACK = """Traceback (most recent call last):
  File "app.py", line 12, in <module>
    main()
KeyError: 'user_id'"""


async def test_reply_context_quoted_message_reaches_the_model_and_the_router(
    seeded_db, embedder, upstream, telegram
):
    async with running(seeded_db, embedder, upstream, telegram) as core:
        await telegram.push_message(
            GROUP, "what does this mean?", mention=True, reply_to_user="Dad", replied_text=TRACEBACK
        )
        await telegram.wait_until(lambda: len(telegram.texts(GROUP)) == 1)
        (row,) = await log_rows(core)
        history = await core.memory.history(f"telegram:{GROUP}")
    # Alone, "what does this mean?" is a cheap lookup; on a traceback it is a coding question.
    # Routed on the words with the quote under them; the log keeps Mom's words only (Dad's
    # traceback is his, for his erasure to reach).
    assert row["prompt"] == "what does this mean?"
    assert row["category"] == "coding" and row["tier"] == "strong"
    asked = upstream.requests[0].body["messages"][-1]["content"]
    assert asked.startswith("Mom: what does this mean?\n\n(replying to Dad:)\n> Traceback")
    assert "> KeyError: 'user_id'" in asked
    # Memory keeps a short reminder of the quote, not the whole of it.
    assert history[0].content.startswith('what does this mean? (replying to Dad: "Traceback')
    assert len(history[0].content) < 200


async def test_reply_context_bare_mention_on_a_reply_asks_about_that_message(
    seeded_db, embedder, upstream, telegram
):
    """Mom mentions the bot with no words of her own on Grandpa's question: his question is what
    is routed (strong, coding) and sent to the model, but Mom's routing-log row keeps none of his
    words (his erasure could not reach them there)."""
    async with running(seeded_db, embedder, upstream, telegram) as core:
        await telegram.push_message(
            GROUP, "", mention=True, reply_to_user="Grandpa", replied_text=CODING
        )
        await telegram.wait_until(lambda: len(telegram.texts(GROUP)) == 1)
        (row,) = await log_rows(core)
        held = [turn.text for _, turn in core.router.context._quotable(f"telegram:{GROUP}")]
    assert (row["prompt"], row["category"], row["tier"]) == ("", "coding", "strong")
    asked = upstream.requests[0].body["messages"][-1]["content"]
    assert asked == f"Mom: (replying to Grandpa:)\n> {CODING}"
    assert held and set(held) == {CODING}  # Mom's next turn is read after his question


async def ask_and_reply(telegram: FakeTelegram, request: str, requester: str, reply: str) -> None:
    """`requester` asks the bot; then Mom (or Dad) replies to that message, mentioning the bot.
    The quoted message is what Telegram sends along: the request with its @mention."""
    await telegram.push_message(GROUP, request, mention=True, user_id=7, first_name=requester)
    await telegram.wait_until(lambda: len(telegram.texts(GROUP)) == 1)
    replier = "Dad" if requester == "Mom" else "Mom"
    await telegram.push_message(
        GROUP,
        reply,
        mention=True,
        first_name=replier,
        reply_to_user=requester,
        replied_text=f"@{BOT_USERNAME} {request}",
    )
    await telegram.wait_until(lambda: len(telegram.texts(GROUP)) == 2)


async def test_a_reaction_replying_to_a_coding_request_routes_cheap(
    seeded_db, embedder, upstream, telegram
):
    async with running(seeded_db, embedder, upstream, telegram) as core:
        await ask_and_reply(telegram, CODING, "Dad", "哈哈 好厲害")
        request, reaction = await log_rows(core)
    assert request["tier"] == "strong"
    # Read with the quote as its text, the reaction was the request again (strong).
    assert (reaction["prompt"], reaction["tier"]) == ("哈哈 好厲害", "cheap")
    # The model still gets the quote, to know what is laughed at.
    asked = upstream.requests[1].body["messages"][-1]["content"]
    assert asked == f"Mom: 哈哈 好厲害\n\n(replying to Dad:)\n> {CODING}"


async def test_chatter_replying_to_someone_elses_request_is_read_as_chatter(
    seeded_db, embedder, upstream, telegram
):
    async with running(seeded_db, embedder, upstream, telegram) as core:
        for n, text in enumerate((CODING, "thanks, trying it now"), start=1):
            await telegram.push_message(GROUP, text, mention=True, user_id=7, first_name="Dad")
            await telegram.wait_until(lambda n=n: len(telegram.texts(GROUP)) == n)
        await telegram.push_message(
            GROUP,
            "working on a saturday again?",
            mention=True,
            first_name="Mom",
            reply_to_user="Dad",
            replied_text=f"@{BOT_USERNAME} {CODING}",
        )
        await telegram.wait_until(lambda: len(telegram.texts(GROUP)) == 3)
        request, _, chatter = await log_rows(core)
    # Telegram says who sent the message replied to: Dad's request, not a task of Mom's to go
    # on with (Dad's last turn, the thanks, is not the message she replies to).
    assert request["tier"] == "strong"
    assert (chatter["category"], chatter["tier"]) == ("casual", "cheap")


async def test_a_short_follow_up_replying_to_a_request_has_its_tier(
    seeded_db, embedder, upstream, telegram
):
    async with running(seeded_db, embedder, upstream, telegram) as core:
        await ask_and_reply(telegram, POEM, "Mom", "shorter")
        request, follow_up = await log_rows(core)
    # Dad said nothing before: only the message he replies to tells what "shorter" is about.
    assert (request["category"], request["tier"]) == ("creative", "medium")
    assert (follow_up["prompt"], follow_up["category"]) == ("shorter", "creative")
    assert (follow_up["tier"], follow_up["source"]) == ("medium", "prior")


async def test_each_command_has_its_handler_and_another_bot_s_commands_are_not_ours(
    seeded_db, embedder, upstream, telegram
):
    async with running(seeded_db, embedder, upstream, telegram):
        await telegram.push_message(55, "/start", chat_type="private")
        await telegram.push_message(55, "/whoami@crabbot_test_bot", chat_type="private")
        await telegram.push_message(GROUP, "/routing@another_bot stats", user_id=TELEGRAM_ADMIN)
        await telegram.push_message(GROUP, "/help@crabbot_test_bot")
        await telegram.wait_until(
            lambda: len(telegram.texts(55)) == 2 and len(telegram.texts(GROUP)) == 1
        )
    start, whoami = telegram.texts(55)
    assert start == HELP
    assert whoami.startswith("You are Mom on telegram, user id 42 (not an admin).")
    assert telegram.texts(GROUP) == [HELP]
    assert upstream.requests == []


async def ask_then_reply_to_the_answer(
    telegram: FakeTelegram, upstream, request: str, answer: str, replier: str, reply: str
) -> None:
    """Dad asks the bot, the bot answers `answer` (Markdown); then `replier` replies to that
    answer (a reply to the bot is addressed to it without a mention). Telegram quotes the answer
    as shown: the Markdown already turned into formatting."""
    upstream.reply = lambda body: answer
    await telegram.push_message(GROUP, request, mention=True, user_id=7, first_name="Dad")
    await telegram.wait_until(lambda: len(telegram.texts(GROUP)) == 1)
    replier_id = 7 if replier == "Dad" else 8
    shown, _ = convert(answer)
    await telegram.push_message(
        GROUP, reply, user_id=replier_id, first_name=replier, reply_to_bot=True, replied_text=shown
    )
    await telegram.wait_until(lambda: len(telegram.texts(GROUP)) == 2)


CODE_ANSWER = (
    "Here you go:\n```python\ndef dedupe(items):\n    seen = set()\n    return [x for x in"
    " items if not (x in seen or seen.add(x))]\n```\nThe set remembers what came before."
)
POEM_ANSWER = "Leaves of amber, leaves of red,\nfalling softly...\n\n**Happy birthday, Grandma!**"


@pytest.mark.parametrize(
    ("request_", "answer", "replier", "reply", "category", "tier"),
    [
        (CODING, CODE_ANSWER, "Dad", "thanks!! works now 🎉", "casual", "cheap"),
        (CODING, CODE_ANSWER, "Mom", "哈哈 好厲害", "casual", "cheap"),
        (POEM, POEM_ANSWER, "Dad", "shorter", "creative", "medium"),
        # Mom said nothing before: only the request the answer answered tells what it is about.
        (POEM, POEM_ANSWER, "Mom", "again but funnier", "creative", "medium"),
    ],
)
async def test_a_reply_to_the_bot_s_answer_reads_the_request_it_answered(
    seeded_db, embedder, upstream, telegram, request_, answer, replier, reply, category, tier
):
    async with running(seeded_db, embedder, upstream, telegram) as core:
        await ask_then_reply_to_the_answer(telegram, upstream, request_, answer, replier, reply)
        _, follow_up = await log_rows(core)
    # Read with the answer under it, thanks for code was code (strong); the answer's request
    # is its context instead, and the model still gets the answer quoted.
    assert (follow_up["prompt"], follow_up["category"], follow_up["tier"]) == (
        reply,
        category,
        tier,
    )
    asked = upstream.requests[1].body["messages"][-1]["content"]
    assert asked.startswith(f"{replier}: {reply}\n\n(replying to crabbot:)\n> ")
