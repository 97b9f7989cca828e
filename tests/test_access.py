"""Who may talk to the bot (issue 24, 1): on Telegram (real python-telegram-bot against the fake
Bot API) and Discord (real discord.py against the fake REST API), a stranger and a group nobody
allowed get one line on how to be let in and no model call, counted; allowed chats and users,
and admins anywhere, are answered."""

from __future__ import annotations

import discord
import pytest

from bot.access import LET_IN
from bot.adapters.discord import build_client
from tests.bot_helpers import TELEGRAM_ADMIN, open_core
from tests.discord_helpers import CHANNEL, guild_channel, message
from tests.fakes.discord_api import BOT_ID, BOT_USER, FakeDiscord, user_payload
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


@pytest.fixture
async def discord_api(monkeypatch):
    server = await FakeDiscord().start()
    monkeypatch.setattr(discord.http.Route, "BASE", server.api_base)
    yield server
    await server.stop()


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
