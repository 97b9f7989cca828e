"""/forget in a bot whose upstream is a routing proxy (model "auto"), end to end on 127.0.0.1: the
bot -> `crabbot proxy` over real HTTP (the categorizer on a fake Groq teaching its pool) -> a fake
provider. The person's words leave the proxy's routing log and pool too, and no one else's: the
proxy knows them by their id, not by a display name they changed or share with someone; an
upstream that is not crabbot's, or none at all, makes the reply say the proxy keeps its copies."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

from aiohttp import web

from bot.chat_user import ChatUser, user_key_of
from bot.incoming import Incoming
from bot.speakers import speaker_name
from router.proxy.access import ClientKey
from tests.fakes.groq_server import category_reply
from tests.fakes.server import LocalServer
from tests.proxy_helpers import CLIENT_KEY, running_proxy
from tests.test_proxy_bot import ADMIN_KEY, GRANNY, MOM, command, open_auto_bot

GROUP, ELSEWHERE = "telegram:-100", "telegram:43"
GRANNY_TEXT = "Is my blood sugar of 9.1 after breakfast a reason to see the doctor this week?"
GRANNY_ELSEWHERE = "Compare the pension rules of Japan and China for someone who worked in both"
MOM_TEXT = "Compare the fuel costs of our two cars over a 900 km road trip to the coast"
GRANNY_RENAMED = "Which of my pills can I take together with grapefruit juice?"
GRANNY_EARLIER = "My knee hurts when it rains, should I get it checked?"
OTHER_MOM_TEXT = "Plan a weekend in Kyoto for two grandparents who walk slowly"
NAMESPACE = ClientKey(CLIENT_KEY.encode(), None).namespace  # the bot's key has no label


def learning(groq_server: Any) -> dict[str, dict[str, Any]]:
    """The proxy's categorizer on the fake Groq decides (shadow mode) and teaches the pool at
    once: erasure is under test, not the learning gate."""
    return {
        "categorizer": {"enabled": True, "base_url": groq_server.base_url},
        "routing": {"mode": "shadow"},
        "pool": {"trusted_after": 0},
    }


async def learned_texts(proxy: Any) -> set[str]:
    """The texts the proxy's pool (or its quarantine, waiting for review) keeps from the chat."""
    await proxy.router.pool_writer.flush()
    rows = await proxy.router.conn.fetch_all(
        "SELECT text FROM pool WHERE label_source = 'llm' UNION ALL SELECT text FROM"
        " pool_quarantine"
    )
    return {str(row[0]) for row in rows}


async def test_forget_in_the_bot_erases_the_persons_words_at_the_proxy_and_no_one_elses(
    tmp_path, seeded_db, embedder, provider, groq_server
):
    groq_server.respond = lambda _request: category_reply("analysis", 0.95)
    async with running_proxy(
        seeded_db,
        embedder,
        provider.base_url,
        sections=learning(groq_server),
        groq_api_key="test-key",
        admin_key=ADMIN_KEY,
    ) as proxy:
        # /forget is anyone's: the bot's client key does it, no admin key needed.
        core = await open_auto_bot(tmp_path / "bot.db", proxy.url, admin_key=None)
        try:
            await core.agent.handle(GROUP, GRANNY, GRANNY_TEXT)
            await core.agent.handle(GROUP, MOM, MOM_TEXT)
            await core.agent.handle(ELSEWHERE, GRANNY, GRANNY_ELSEWHERE)
            await proxy.gateway.settled()
            learned_before = await learned_texts(proxy)
            forgot = await command(core, GRANNY, GROUP, "/forget")
            again = await command(core, GRANNY, GROUP, "/forget")
        finally:
            await core.close()
        rows = await proxy.rows()
        learned_after = await learned_texts(proxy)
        in_memory = [proxy.router.pool.contains_text(t) for t in (GRANNY_TEXT, MOM_TEXT)]
        notices = await proxy.router.conn.fetch_all(
            "SELECT conv_key, user_key FROM erasure_notices"
        )

    assert learned_before >= {GRANNY_TEXT, MOM_TEXT, GRANNY_ELSEWHERE}  # the test means something
    assert forgot == (
        "Done: erased 2 memory messages, 0 routing-log prompts, 0 pool entries of yours from this"
        " conversation; the routing proxy erased 1 routing-log prompt, 1 pool entry."
    )
    assert again == "Nothing you said here is kept."
    # Her words in the group left the proxy's routing log and pool; the row stays, for stats.
    granny = f"proxy:{NAMESPACE}:{user_key_of(GRANNY)}"  # as the bot named her: X-Crabbot-Speaker
    group = f"proxy:{NAMESPACE}:{GROUP}"
    assert [(row["conv_key"], row["user_key"], row["prompt"]) for row in rows] == [
        (group, granny, ""),
        (group, f"proxy:{NAMESPACE}:{user_key_of(MOM)}", MOM_TEXT),
        (f"proxy:{NAMESPACE}:{ELSEWHERE}", granny, GRANNY_ELSEWHERE),  # another conversation
    ]
    assert GRANNY_TEXT not in learned_after
    assert {MOM_TEXT, GRANNY_ELSEWHERE} <= learned_after
    assert in_memory == [False, True]  # the proxy's pool in memory let go of it too
    # The other processes on the proxy's database hear of it, as of `crabbot forget`: by her key,
    # and by the name an older bot keyed her words under.
    by_name = f"proxy:{NAMESPACE}:{speaker_name(GRANNY.name)}"
    assert [tuple(row) for row in notices] == [(group, granny), (group, by_name)] * 2


async def said_then_forgot(
    tmp_path: Path,
    provider: Any,
    turns: list[tuple[ChatUser, str]],
    forgetter: ChatUser,
    older_bot: tuple[str, str] | None = None,
) -> tuple[str, list[str]]:
    """`turns` said through a bot behind a proxy in the group, then `forgetter`'s /forget there:
    its reply, and the prompts the proxy's routing log keeps, oldest first. `older_bot` (a
    `name` and words) is first sent as a bot from before X-Crabbot-Speaker sent it: the `name`
    alone says who speaks."""
    async with running_proxy(tmp_path / "p.db", None, provider.base_url) as proxy:
        if older_bot is not None:
            name, text = older_bot
            async with proxy.client(default_headers={"X-Session-Key": GROUP}) as client:
                message = {"role": "user", "content": text, "name": name}
                await client.chat.completions.create(model="auto", messages=[message])
        core = await open_auto_bot(tmp_path / "bot.db", proxy.url)
        try:
            for user, text in turns:
                await core.agent.handle(GROUP, user, text)
            await proxy.gateway.settled()
            forgot = await command(core, forgetter, GROUP, "/forget")
        finally:
            await core.close()
        return forgot, [row["prompt"] for row in await proxy.rows()]


async def test_forget_erases_at_the_proxy_what_a_person_said_under_each_of_their_names(
    tmp_path, provider
):
    """Grandma changed her Telegram first name between two messages: one /forget erases both
    at the proxy, and the words an older bot had sent as her (keyed by the name it gave)."""
    renamed = ChatUser(GRANNY.platform, GRANNY.id, "Nai Nai")
    forgot, prompts = await said_then_forgot(
        tmp_path,
        provider,
        [(GRANNY, GRANNY_TEXT), (renamed, GRANNY_RENAMED), (MOM, MOM_TEXT)],
        renamed,
        older_bot=(speaker_name(renamed.name), GRANNY_EARLIER),
    )
    assert prompts == ["", "", "", MOM_TEXT]
    assert forgot == (
        "Done: erased 4 memory messages, 0 routing-log prompts, 0 pool entries of yours from this"
        " conversation; the routing proxy erased 3 routing-log prompts, 0 pool entries."
    )


async def test_forget_leaves_at_the_proxy_the_words_of_another_person_of_the_same_name(
    tmp_path, provider
):
    """Two people called Mom in one chat (Dad's mother too): one's /forget erases her words at
    the proxy, and the other's stay."""
    other_mom = ChatUser("telegram", 44, MOM.name)
    forgot, prompts = await said_then_forgot(
        tmp_path, provider, [(MOM, MOM_TEXT), (other_mom, OTHER_MOM_TEXT)], MOM
    )
    assert prompts == ["", OTHER_MOM_TEXT]
    assert forgot == (
        "Done: erased 2 memory messages, 0 routing-log prompts, 0 pool entries of yours from this"
        " conversation; the routing proxy erased 1 routing-log prompt, 0 pool entries."
    )


async def test_forget_says_the_proxy_keeps_its_copies_when_it_cannot_erase_them(
    tmp_path, provider, caplog
):
    caplog.set_level(logging.DEBUG)

    async def forget_through(url: str) -> tuple[str, int]:
        core = await open_auto_bot(tmp_path / "bot.db", url)
        try:
            await core.agent.handle(GROUP, GRANNY, GRANNY_TEXT)
            reply = await command(core, GRANNY, GROUP, "/forget")
        finally:
            await core.close()
        return reply, core.counters["proxy_admin_errors"]

    # Not crabbot proxy: the plain OpenAI-compatible API answers 404 to the admin path.
    plain_url = provider.base_url.rstrip("/")
    plain = await forget_through(plain_url)
    async with running_proxy(tmp_path / "p.db", None, provider.base_url) as proxy:
        gone_url = proxy.url
    # Stopped now: nothing listens there, so no answer came and the bot kept nothing either.
    gone = await forget_through(gone_url)

    done = "Done: erased 2 memory messages, 0 routing-log prompts, 0 pool entries of yours from"
    assert plain == (
        f"{done} this conversation; the routing proxy keeps its own copies of your words: the"
        f" upstream at {plain_url} has no crabbot admin endpoints.",
        1,
    )
    assert gone == (
        "Nothing you said here is kept by the bot; the routing proxy keeps its own copies of your"
        f" words: the proxy at {gone_url} is unreachable.",
        1,
    )
    assert CLIENT_KEY not in caplog.text and ADMIN_KEY not in caplog.text


async def test_forget_reaches_a_proxy_from_before_speaker_lists_one_name_at_a_time(tmp_path):
    """A bot upgraded before its proxy (two hosts): the older proxy refuses `speaker` as a list
    (400, param "speaker") and keeps words by `name`; each name goes again on its own."""
    asked: list[object] = []

    async def older_forget(request: web.Request) -> web.Response:
        speaker = (await request.json()).get("speaker")
        asked.append(speaker)
        if not isinstance(speaker, str):
            error = {"message": "speaker must be a non-empty string", "param": "speaker"}
            error["type"] = "invalid_request_error"
            return web.json_response({"error": error}, status=400)
        prompts = 2 if speaker == speaker_name(GRANNY.name) else 0  # it kept her words by name
        return web.json_response({"erased": {"prompts": prompts, "pool_entries": 1}})

    app = web.Application()
    app.router.add_post("/admin/forget", older_forget)
    older = LocalServer(app)
    await older.start()
    core = await open_auto_bot(tmp_path / "bot.db", older.url, admin_key=None)
    try:
        reply = await command(core, GRANNY, GROUP, "/forget")
    finally:
        await core.close()
        await older.stop()
    assert asked == [[GRANNY.key, speaker_name(GRANNY.name)], GRANNY.key, speaker_name(GRANNY.name)]
    assert reply.endswith("; the routing proxy erased 2 routing-log prompts, 2 pool entries.")
    assert core.counters["proxy_admin_errors"] == 0


async def test_forget_reaches_a_message_the_proxy_got_after_it(tmp_path, provider):
    """A message sent before /forget and still being read (a voice message transcribed) reaches
    the proxy after the erasure did: the bot keeps nothing of it, and has the proxy let go too."""
    async with running_proxy(tmp_path / "p.db", None, provider.base_url) as proxy:
        core = await open_auto_bot(tmp_path / "bot.db", proxy.url)
        try:
            reading, go = asyncio.Event(), asyncio.Event()

            async def transcribed() -> Incoming:
                reading.set()
                await go.wait()
                return Incoming(GRANNY_TEXT)

            answering = asyncio.create_task(core.agent.handle(GROUP, GRANNY, transcribed))
            await reading.wait()
            forgot = await command(core, GRANNY, GROUP, "/forget")
            go.set()
            reply = await answering
            await proxy.gateway.settled()
            history = await core.memory.history(GROUP)
        finally:
            await core.close()
        rows = [(row["user_key"], row["prompt"]) for row in await proxy.rows()]
    assert forgot == "Nothing you said here is kept."
    assert reply.ok and history == []
    assert rows == [(f"proxy:{NAMESPACE}:{GRANNY.key}", "")]
    assert core.counters["proxy_admin_errors"] == 0
