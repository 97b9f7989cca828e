"""The console adapter: a terminal chat with crabbot, each reply followed by one dim line with
the routing decision; the console user is the admin."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from rich.console import Console
from rich.markup import escape

from bot.agent import Reply
from bot.chat_user import ChatUser
from bot.runtime import BotCore
from bot.upstream import AUTO_MODEL, MISSING_HINT

log = logging.getLogger(__name__)

QUIT = {"/quit", "/exit", "/q"}
ReadLine = Callable[[], Awaitable[str | None]]


def decision_line(reply: Reply) -> str:
    decision = reply.decision
    if decision is None:
        why = "the upstream routes" if reply.model == AUTO_MODEL else "fixed in config"
        return f"model {reply.model} ({why})"
    parts = [decision.tier, decision.model, decision.source, f"{decision.latency_ms:.0f} ms"]
    if decision.category:
        parts.insert(1, decision.category)
    if reply.error:
        parts.append(reply.error)
    return " · ".join(parts)


def terminal_reader(console: Console, prompt: str = "you> ") -> ReadLine:
    async def read() -> str | None:
        try:
            return await asyncio.to_thread(console.input, prompt)
        except EOFError:
            return None

    return read


async def run_console(core: BotCore, name: str, read: ReadLine, out: Console) -> None:
    """Chat until end of input or /quit."""
    conv_key = f"console:{name}"
    user = ChatUser("console", name, name)
    if not core.upstream.configured:
        out.print(f"[yellow]{escape(MISSING_HINT)}[/yellow]")
    out.print("[dim]/help for commands, /quit to leave[/dim]")
    while True:
        line = await read()
        if line is None or line.strip() in QUIT:
            break
        text = line.strip()
        if not text:
            continue
        try:
            await _answer(core, user, conv_key, text, out)
        except Exception as exc:  # one failed message must not end the chat
            log.exception("console message failed")
            out.print(f"[red]error: {escape(type(exc).__name__)}; the chat goes on[/red]")


async def _answer(core: BotCore, user: ChatUser, conv_key: str, text: str, out: Console) -> None:
    answer = await core.admin.dispatch(user, conv_key, text)
    if answer is not None:
        out.print(answer, markup=False, highlight=False)
        return
    reply = await core.agent.handle(conv_key, user, text)
    if reply.text is not None:
        out.print(reply.text, markup=False, highlight=False)
    out.print(f"[dim]{escape(decision_line(reply))}[/dim]", highlight=False)
