"""Helpers for the Telegram tests: a BotCore and a polling Application on a fake Bot API."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from bot.adapters.telegram import build_application, polling
from bot.runtime import BotCore
from router.embedding.embedder import Embedder
from tests.bot_helpers import open_core
from tests.fakes.openai_api import FakeOpenAI
from tests.fakes.telegram_api import TOKEN, FakeTelegram


@asynccontextmanager
async def running(
    db: Path,
    embedder: Embedder,
    upstream: FakeOpenAI,
    telegram: FakeTelegram,
    /,  # so `telegram={...}` is the [telegram] section
    *,
    stream: bool = False,
    **sections: dict[str, Any],
) -> AsyncIterator[BotCore]:
    """A BotCore and a polling Application on it, both closed at the end of the block. Replies
    come whole unless `stream`; streamed ones are edited with no pause between edits."""
    sections["telegram"] = {
        "base_url": telegram.base_url,
        "base_file_url": telegram.base_file_url,
        "edit_interval_s": 0.0,
        "group_edit_interval_s": 0.0,
    } | sections.get("telegram", {})
    sections["upstream"] = {"stream": stream} | sections.get("upstream", {})
    core = await open_core(db, embedder, upstream.base_url, **sections)
    try:
        async with polling(build_application(core, TOKEN, core.config.telegram)):
            yield core
    finally:
        await core.close()


def image_parts(request: dict[str, Any]) -> list[str]:
    """The data URLs of the images in a chat request's last message."""
    content = request["messages"][-1]["content"]
    return [part["image_url"]["url"] for part in content if part["type"] == "image_url"]


def data_url(data: bytes) -> str:
    return f"data:image/jpeg;base64,{base64.b64encode(data).decode()}"


async def messages_table(core: BotCore) -> str:
    """Every message memory keeps, in order, joined by "|", once the writes behind are done."""
    assert await core.memory.flush()  # exchanges are written behind the reply
    rows = await core.router.conn.fetch_all("SELECT content FROM messages ORDER BY id")
    return "|".join(row[0] for row in rows)
