"""Helpers for the chat bot's tests: a BotCore on a test database, with a fake upstream."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bot.admin import Admin, Text, parse_command
from bot.chat_user import ChatUser
from bot.runtime import BotCore
from router import Secrets
from router.embedding.embedder import Embedder
from tests.conftest import make_config

TELEGRAM_ADMIN = 7001
DISCORD_ADMIN = 8001
# Answers whose every character must reach the chat as written: what CommonMark would read as
# raw HTML outside code spans (tracebacks, comparisons, generics, tags), with emoji and CJK.
VERBATIM = [
    'Traceback (most recent call last):\n  File "app.py", line 12, in <module>\n'
    "    main()\nNameError: name 'main' is not defined",
    "x <module> y",
    "if a<b and b>c: pass",
    "Use List<int> or Map<String, List<Integer>> here.",
    "Write <br> for a line break, <b>bold</b> for bold, and <!-- a comment --> stays.",
    "<div>\n咖喱 <em>很辣</em> 🌶️\n</div>",
    "🦀 a<b 和 c>d 😀 <ok> 日本語<タグ>です",
]
NO_SECRETS = Secrets(
    groq_api_key=None,
    openai_api_key=None,
    openai_base_url=None,
    telegram_bot_token=None,
    discord_bot_token=None,
)


async def open_core(
    db: Path,
    embedder: Embedder,
    upstream_url: str | None,
    *,
    mode: str = "live",
    secrets: Secrets = NO_SECRETS,
    **sections: dict[str, Any],
) -> BotCore:
    upstream = {"max_retries": 0, "timeout_s": 10.0} | sections.pop("upstream", {})
    if upstream_url is not None:
        upstream["base_url"] = upstream_url
    admins = {"telegram": [TELEGRAM_ADMIN], "discord": [DISCORD_ADMIN]} | sections.pop("admins", {})
    # The bot's own tests talk to it as anyone; tests/test_access.py checks who is let in.
    sections.setdefault("access", {"everyone": True})
    config = make_config(db, mode, upstream=upstream, admins=admins, **sections)
    return await BotCore.open(config, secrets, embedder=embedder)


async def open_learning_core(
    db: Path, embedder: Embedder, upstream_url: str, groq_url: str, **sections: dict[str, Any]
) -> BotCore:
    """A bot in shadow mode whose categorizer is the fake Groq API at `groq_url`: every message
    is labelled, and the label may teach the pool."""
    sections["categorizer"] = {"base_url": groq_url} | sections.get("categorizer", {})
    secrets = Secrets(groq_api_key="test-key", openai_api_key=None, openai_base_url=None)
    return await open_core(db, embedder, upstream_url, mode="shadow", secrets=secrets, **sections)


async def log_rows(core: BotCore, where: str = "TRUE", params: tuple[Any, ...] = ()) -> list[dict]:
    """The routing log's rows, once every decision finished so far is written."""
    await core.router.log.flush()
    rows = await core.router.conn.fetch_all(
        f"SELECT * FROM routing_log WHERE {where} ORDER BY id", params
    )
    return [dict(row) for row in rows]


async def dispatch(admin: Admin, user: ChatUser, conv_key: str, text: str) -> str | None:
    """The answer to a command message as text, as an adapter without pictures gets it; None
    when `text` is not a command."""
    command = parse_command(text)
    if command is None:
        return None
    answer = await admin.answer(user, conv_key, command)
    assert isinstance(answer, Text)
    return answer.text
