"""Who may talk to the bot (issue 24, 1): on Telegram (real python-telegram-bot against the fake
Bot API) and Discord (real discord.py against the fake REST API), a stranger and a group nobody
allowed get one line on how to be let in and no model call, counted; allowed chats and users,
and admins anywhere, are answered."""

from __future__ import annotations

import pytest

from bot.access import LET_IN
from bot.adapters.discord import build_client
from tests.bot_helpers import DISCORD_ADMIN, TELEGRAM_ADMIN, open_core
from tests.discord_helpers import (
    ANN,
    CHANNEL,
    DM_CHANNEL,
    guild_channel,
    message,
    slash_event,
    subcommand,
)
from tests.fakes.discord_api import BOT_ID, BOT_USER, user_payload
from tests.fakes.telegram_api import FakeTelegram
from tests.telegram_helpers import running

ALLOWED_GROUP, STRANGERS_GROUP = -1001, -2002
FAMILY, STRANGER = 55, 42
LET_IN_START = LET_IN.split("{")[0]


@pytest.fixture
async def telegram():
    server = await FakeTelegram().start()
    yield server
    await server.stop()


async def test_telegram_serves_only_who_config_allows(seeded_db, embedder, upstream, telegram):
    access = {"telegram_users": [FAMILY], "telegram_chats": [ALLOWED_GROUP]}
    async with running(seeded_db, embedder, upstream, telegram, access=access) as core:
        # A stranger in a private chat, twice: one line with their id, then silence.
        await telegram.push_message(STRANGER, "hello, who are you?", user_id=STRANGER)
        await telegram.wait_until(lambda: core.counters["access_refused"] == 1)
        await telegram.push_message(STRANGER, "answer me!", user_id=STRANGER)
        # A group nobody allowed, someone mentioning the bot.
        await telegram.push_message(STRANGERS_GROUP, "what is 2+2", user_id=STRANGER, mention=True)
        await telegram.wait_until(lambda: core.counters["access_refused"] == 3)
        # /whoami works for anyone: it is how they learn their id.
        await telegram.push_message(STRANGER, "/whoami", user_id=STRANGER)
        await telegram.wait_until(lambda: len(telegram.texts(STRANGER)) == 2)
        assert upstream.requests == [], "no model call for anyone not let in"
        # Allowed: a family member in private, anyone in the allowed group, an admin anywhere.
        await telegram.push_message(FAMILY, "good morning!", user_id=FAMILY)
        await telegram.push_message(ALLOWED_GROUP, "hi crab", user_id=STRANGER, mention=True)
        await telegram.push_message(
            STRANGERS_GROUP, "hello from the admin", user_id=TELEGRAM_ADMIN, mention=True
        )
        await telegram.wait_until(lambda: len(upstream.requests) == 3)
        await telegram.wait_until(lambda: len(telegram.texts(ALLOWED_GROUP)) == 1)
        await telegram.wait_until(lambda: len(telegram.texts(FAMILY)) == 1)
        await telegram.wait_until(lambda: len(telegram.texts(STRANGERS_GROUP)) == 2)
    private = telegram.texts(STRANGER)
    assert private[0].startswith(LET_IN_START) and f"telegram_users = [{STRANGER}]" in private[0]
    assert len(private[0]) < 300
    assert f"user id {STRANGER}" in private[1]  # the /whoami answer
    group = telegram.texts(STRANGERS_GROUP)
    assert f"telegram_chats = [{STRANGERS_GROUP}]" in group[0]
    assert core.counters["access_refused"] == 3


async def test_discord_serves_only_allowed_channels_and_users(
    seeded_db, embedder, upstream, discord_api
):
    core = await open_core(
        seeded_db, embedder, upstream.base_url, upstream={"stream": False}, access={}
    )
    client = build_client(core)
    await client.login("fake-discord-token")
    try:
        channel = guild_channel(client)
        mention = f"<@{BOT_ID}> dinner ideas?"
        await client.on_message(message(client, channel, mention, [BOT_USER]))
        await client.on_message(message(client, channel, mention + " please", [BOT_USER]))
        assert upstream.requests == [] and core.counters["access_refused"] == 2
        (line,) = discord_api.texts(CHANNEL)
        assert "discord_users = [4242]" in line and f"discord_channels = [{CHANNEL}]" in line
    finally:
        await client.close()
        await core.close()
    allowed = await open_core(
        seeded_db,
        embedder,
        upstream.base_url,
        upstream={"stream": False},
        access={"discord_channels": [CHANNEL]},
    )
    client = build_client(allowed)
    await client.login("fake-discord-token")
    try:
        bob = user_payload(4343, "Bob")
        await client.on_message(
            message(client, guild_channel(client), f"<@{BOT_ID}> hi!", [BOT_USER], author=bob)
        )
        assert len(upstream.requests) == 1 and allowed.counters["access_refused"] == 0
    finally:
        await client.close()
        await allowed.close()


EPHEMERAL = 64


async def test_discord_slash_commands_pass_the_same_door(
    seeded_db, embedder, upstream, discord_api
):
    """Issue 24, 1: a slash command from a stranger, or in a channel nobody allowed, gets the
    line on how to be let in (only they see it), counted, and does nothing; /whoami stays
    open; a role, a server's member list or an admin gets through. Each command arrives as the
    gateway's INTERACTION_CREATE and goes through discord.py's own command tree."""
    role, bob = 7100, user_payload(4343, "Bob")
    core = await open_core(
        seeded_db, embedder, upstream.base_url, upstream={"stream": False},
        access={"discord_roles": [role]},
    )  # fmt: skip
    client = build_client(core)
    await client.login("fake-discord-token")
    events = client._connection

    async def use(event: dict) -> dict:
        count = len(discord_api.callbacks)
        events.parse_interaction_create(event)
        await discord_api.wait_until(lambda: len(discord_api.callbacks) > count)
        return discord_api.callbacks[-1][1]

    async def use_deferred(event: dict) -> dict:
        """A command let in that waits on the database: "thinking" first, then the text."""
        count = len(discord_api.followups)
        assert (await use(event))["type"] == 5
        await discord_api.wait_until(lambda: len(discord_api.followups) > count)
        return discord_api.followups[-1][1]

    try:
        await core.memory.add_exchange(f"discord:{CHANNEL}", "Bob", "our plans?", "the zoo")
        await client.on_message(
            message(client, guild_channel(client), f"<@{BOT_ID}> hi", [BOT_USER])
        )
        assert core.counters["access_refused"] == 1  # Ann has no role: refused, as a message
        stranger = [
            slash_event(ANN, 11, "routing", subcommand("mode", mode="off")),
            slash_event(ANN, 12, "routing", subcommand("stats", chart=True)),
            slash_event(ANN, 13, "reset"),
            slash_event(ANN, 14, "forget"),
            slash_event(ANN, 15, "reset", channel_id=DM_CHANNEL, guild_id=None),
        ]
        answers = [await use(event) for event in stranger]
        assert core.router.mode == "live" and upstream.requests == []
        assert len(await core.memory.history(f"discord:{CHANNEL}")) == 2  # nothing reset
        assert core.counters["access_refused"] == 1 + len(stranger)
        for body in answers:  # answered at once (not deferred), only to them, with their id
            assert body["type"] == 4 and body["data"]["flags"] == EPHEMERAL
            assert body["data"]["content"].startswith(LET_IN_START)
            assert "discord_users = [4242]" in body["data"]["content"]
        assert f"discord_channels = [{CHANNEL}]" in answers[0]["data"]["content"]
        assert "discord_channels" not in answers[-1]["data"]["content"]  # a DM is theirs alone
        whoami = await use(slash_event(ANN, 16, "whoami"))
        assert "4242" in whoami["data"]["content"] and not whoami["data"]["content"].startswith(
            LET_IN_START
        )
        # Bob has the role; the admin is let in anywhere, here in a DM.
        bobs = await use_deferred(slash_event(bob, 17, "reset", roles=(role,)))
        assert bobs["content"].startswith("Forgot this conversation (2 messages)")
        dad = user_payload(DISCORD_ADMIN, "Dad")
        mode = slash_event(dad, 18, "routing", subcommand("mode", mode="shadow"), guild_id=None)
        assert (await use_deferred(mode))["content"] == "routing mode: live → shadow"
        assert core.counters["access_refused"] == 1 + len(stranger)
    finally:
        await client.close()
        await core.close()


async def test_telegram_commands_and_other_updates_pass_the_same_door(
    seeded_db, embedder, upstream, telegram
):
    """Issue 24, 1: a stranger's /reset, /routing and /forget are refused like their messages
    (one line a chat, counted, nothing done); edited messages, channel posts and button
    presses are answered for nobody (the fake delivers them whatever allowed_updates says)."""
    async with running(
        seeded_db, embedder, upstream, telegram, access={"telegram_users": [FAMILY]}
    ) as core:
        group_key = f"telegram:{STRANGERS_GROUP}"
        await core.memory.add_exchange(group_key, "Zoe", "plans for saturday?", "the zoo")
        for text in ("/reset", "/routing mode off", "/forget"):
            await telegram.push_message(STRANGER, text, user_id=STRANGER)
        await telegram.push_message(
            STRANGERS_GROUP, "/routing@crabbot_test_bot stats", user_id=STRANGER
        )
        await telegram.push_message(STRANGERS_GROUP, "/reset", user_id=STRANGER)
        await telegram.wait_until(lambda: core.counters["access_refused"] == 5)
        chat = {"id": STRANGERS_GROUP, "type": "supergroup", "title": "Strangers"}
        sender = {"id": STRANGER, "is_bot": False, "first_name": "Eve"}
        handle = "@crabbot_test_bot"
        mention = [{"type": "mention", "offset": 0, "length": len(handle)}]
        said = {"date": 1, "chat": chat, "from": sender, "text": f"{handle} what is 2+2"}
        await telegram.push_update(
            "edited_message", said | {"message_id": 900, "entities": mention}
        )
        private = {"id": STRANGER, "type": "private", "first_name": "Eve"}
        edited = {"message_id": 901, "date": 1, "chat": private, "from": sender, "text": "hello?"}
        await telegram.push_update("edited_message", edited)
        command = [{"type": "bot_command", "offset": 0, "length": 8}]
        reset = edited | {"message_id": 902, "text": "/routing mode off", "entities": command}
        await telegram.push_update("edited_message", reset)
        channel = {"id": -1003, "type": "channel", "title": "News"}
        post = {"message_id": 903, "date": 1, "chat": channel, "text": f"{handle} summarise this"}
        await telegram.push_update("channel_post", post | {"entities": mention})
        button = {"id": "cb1", "from": sender, "chat_instance": "1", "data": "routing mode off"}
        await telegram.push_update("callback_query", button | {"message": edited})
        # A family message after them all: once it is answered, the updates before it were seen.
        await telegram.push_message(FAMILY, "good night", user_id=FAMILY)
        await telegram.wait_until(lambda: len(telegram.texts(FAMILY)) == 1)
        assert len(upstream.requests) == 1, "the family's message only"
        assert core.router.mode == "live"
        assert len(await core.memory.history(group_key)) == 2  # the stranger reset nothing
    private_lines, group_lines = telegram.texts(STRANGER), telegram.texts(STRANGERS_GROUP)
    assert len(private_lines) == 1 and private_lines[0].startswith(LET_IN_START)
    assert len(group_lines) == 1 and f"telegram_chats = [{STRANGERS_GROUP}]" in group_lines[0]
    assert telegram.texts(-1003) == [] and telegram.sent(method="answerCallbackQuery") == []
    assert core.counters["access_refused"] == 5
