"""/routing stats in chat: the cost line, and /routing stats chart sent as a picture by the
Telegram and Discord adapters, through python-telegram-bot and discord.py to their fake APIs."""

from __future__ import annotations

import struct
import time

import pytest

from bot.adapters.discord import build_client
from bot.admin import (
    CHART_CAPTION,
    CHART_ELSEWHERE,
    REFUSAL,
    Command,
    Picture,
    Text,
    parse_command,
)
from bot.chat_user import ChatUser
from bot.runtime import BotCore
from router import RoutingDecision
from router.store.routing_log import write_decision
from tests.bot_helpers import DISCORD_ADMIN, TELEGRAM_ADMIN, dispatch, open_core
from tests.discord_helpers import CHANNEL, guild_channel, message
from tests.fakes.discord_api import BOT_ID, BOT_USER, user_payload
from tests.fakes.telegram_api import FakeTelegram
from tests.telegram_helpers import running

ADMIN = ChatUser("telegram", TELEGRAM_ADMIN, "Dad")
KID = ChatUser("telegram", 12, "Kid")


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])


async def write_history(core: BotCore) -> None:
    """Three decisions in the last hour, two with usage."""
    conn, now = core.router.conn, time.time()
    for ago, tier, usage in ((3600, "cheap", (1000, 1000)), (60, "strong", (1000, 1000)),
                             (30, "medium", None)):  # fmt: skip
        decision = RoutingDecision(
            category="casual",
            tier=tier,
            model=core.router.config.models.for_tier(tier),
            confidence=0.9,
            source="llm",
            mode="shadow",
            tier_mapping_version="v2",
            latency_ms=1.0,
        )
        decision.text, decision.conv_key, decision.at = "hi", "c", now - ago
        decision.prompt_tokens, decision.completion_tokens = usage or (None, None)
        await write_decision(conn, decision)


@pytest.fixture
async def core(seeded_db, embedder):
    core = await open_core(seeded_db, embedder, None)
    await write_history(core)
    yield core
    await core.close()


async def test_stats_text_has_the_cost_line(core):
    text = await dispatch(core.admin, ADMIN, "c", "/routing stats")
    # Default prices: nano 0.10/0.40, mini 0.40/1.60, gpt-4.1 2.00/8.00 per million tokens.
    routed = (0.10 + 0.40 + 2.00 + 8.00) * 1000 / 1e6
    strong = 2 * (2.00 + 8.00) * 1000 / 1e6
    assert f"cost: routed {routed:.4f}" in text
    assert f"all-strong {strong:.4f} (saved {100 * (1 - routed / strong):.0f}%)" in text
    assert "(n=2); 1 without usage" in text
    assert text.count("cost: ") == 2  # the last day and all time


async def test_chart_is_for_admins_and_the_console_is_told_where_it_is(core):
    command = parse_command("/routing@crabbot_bot stats CHART")
    assert command == Command("routing", ("stats", "CHART"))
    picture = await core.admin.answer(ADMIN, "c", command, pictures=True)
    assert isinstance(picture, Picture) and png_size(picture.png) == (1000, 800)
    assert picture.caption == CHART_CAPTION
    assert await core.admin.answer(KID, "c", command, pictures=True) == Text(REFUSAL)
    stats = await core.admin.answer(ADMIN, "c", Command("routing", ("stats",)), pictures=True)
    assert isinstance(stats, Text) and stats.table and stats.text.startswith("crabbot routing")
    assert await dispatch(core.admin, KID, "c", "/routing stats chart") == REFUSAL
    assert await dispatch(core.admin, ADMIN, "c", "/routing stats chart") == CHART_ELSEWHERE


async def test_telegram_sends_the_chart_as_a_photo(seeded_db, embedder, upstream):
    telegram = await FakeTelegram().start()
    try:
        async with running(seeded_db, embedder, upstream, telegram) as core:
            await write_history(core)
            await telegram.push_message(-100, "/routing stats chart", user_id=TELEGRAM_ADMIN)
            await telegram.wait_until(lambda: bool(telegram.sent(-100, "sendPhoto")))
            await telegram.push_message(-100, "/routing stats chart", user_id=12)
            await telegram.wait_until(lambda: bool(telegram.texts(-100)))
    finally:
        await telegram.stop()
    (photo,) = telegram.sent(-100, "sendPhoto")
    assert photo["caption"] == CHART_CAPTION
    ((method, field, png),) = telegram.uploads
    assert (method, field, png_size(png)) == ("sendPhoto", "photo", (1000, 800))
    assert telegram.texts(-100) == [REFUSAL]


async def test_discord_sends_the_chart_as_a_file(core, discord_api):
    client = build_client(core)
    await client.login("fake-discord-token")
    dad = user_payload(DISCORD_ADMIN, "Dad")
    try:
        mention = f"<@{BOT_ID}> /routing stats chart"
        await client.on_message(
            message(client, guild_channel(client), mention, [BOT_USER], author=dad)
        )
        await client.on_message(message(client, guild_channel(client), mention, [BOT_USER]))
    finally:
        await client.close()
    ((name, png),) = discord_api.uploads
    assert name.endswith(".png") and png_size(png) == (1000, 800)
    (chart, refusal) = [body for channel, body in discord_api.messages if channel == CHANNEL]
    assert chart["attachments"][0]["description"] == CHART_CAPTION
    assert refusal["content"] == REFUSAL
