"""/routing stats in chat: the cost line, and /routing stats chart sent as a picture by the
Telegram and Discord adapters (their message objects stubbed; the picture is real)."""

from __future__ import annotations

import struct
import time
from types import SimpleNamespace
from unittest.mock import AsyncMock

import pytest

from bot.adapters.discord import CrabbotDiscord
from bot.adapters.telegram import TelegramBot
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
from router import RoutingDecision
from router.store.routing_log import write_decision
from tests.bot_helpers import DISCORD_ADMIN, TELEGRAM_ADMIN, open_core

ADMIN = ChatUser("telegram", TELEGRAM_ADMIN, "Dad")
KID = ChatUser("telegram", 12, "Kid")


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])


@pytest.fixture
async def core(seeded_db, embedder):
    core = await open_core(seeded_db, embedder, None)
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
    yield core
    await core.close()


async def test_stats_text_has_the_cost_line(core):
    text = await core.admin.dispatch(ADMIN, "c", "/routing stats")
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
    assert await core.admin.dispatch(KID, "c", "/routing stats chart") == REFUSAL
    assert await core.admin.dispatch(ADMIN, "c", "/routing stats chart") == CHART_ELSEWHERE


async def test_telegram_sends_the_chart_as_a_photo(core):
    message = SimpleNamespace(
        text="/routing stats chart",
        from_user=SimpleNamespace(id=TELEGRAM_ADMIN, first_name="Dad", username=None),
        chat_id=-100,
        chat=SimpleNamespace(title="family", type="supergroup"),
        is_topic_message=False,
        message_thread_id=None,
        reply_photo=AsyncMock(),
        reply_text=AsyncMock(),
    )
    await TelegramBot(core).on_command(SimpleNamespace(message=message), None)
    message.reply_text.assert_not_called()
    photo = message.reply_photo.call_args.args[0]
    assert png_size(photo) == (1000, 800)

    message.from_user = SimpleNamespace(id=12, first_name="Kid", username=None)
    await TelegramBot(core).on_command(SimpleNamespace(message=message), None)
    message.reply_text.assert_called_once_with(REFUSAL)


async def test_discord_sends_the_chart_as_a_file(core):
    client = CrabbotDiscord(core)
    client.addressed_text = lambda message: message.content  # no login: the bot is "mentioned"
    message = SimpleNamespace(
        content="/routing stats chart",
        channel=SimpleNamespace(id=55),
        author=SimpleNamespace(id=DISCORD_ADMIN, display_name="Dad"),
        reply=AsyncMock(),
        reference=None,
        attachments=[],
    )
    try:
        await client.on_message(message)
    finally:
        await client.close()
    attachment = message.reply.call_args.kwargs["file"]
    assert attachment.filename.endswith(".png")
    assert png_size(attachment.fp.read()) == (1000, 800)
