"""Helpers for the Telegram tests: a BotCore and a polling Application on a fake Bot API."""

from __future__ import annotations

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
