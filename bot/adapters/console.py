"""The console adapter: a terminal chat with crabbot (prompt_toolkit: line editing, history kept
across runs, a paste of any length arrives as one message), each reply followed by one dim line
with the routing decision; a streamed answer is printed as it is written. Ctrl-C cancels an
answer or quits at the prompt, Ctrl-D quits."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

from rich.console import Console
from rich.markup import escape

from bot.admin import Answer, Text, parse_command
from bot.agent import Reply
from bot.chat_user import ChatUser
from bot.console_history import PrivateHistory
from bot.incoming import Incoming
from bot.runtime import BotCore
from bot.turns import Turns
from bot.upstream import AUTO_MODEL, MISSING_HINT
from router.text import readable

log = logging.getLogger(__name__)

QUIT = {"/quit", "/exit", "/q"}
ReadLine = Callable[[], Awaitable[str | None]]


def proxy_line(reply: Reply) -> str | None:
    """What the routing proxy chose (its X-Crabbot-* headers), when the upstream is one."""
    routed = reply.routed
    if routed is None:
        return None
    parts = [part for part in (routed.tier, routed.category, routed.model) if part]
    parts += [routed.source, "routed by the proxy"]
    if reply.error:
        parts.append(reply.error)
    return " · ".join(parts)


def decision_line(reply: Reply) -> str:
    decision = reply.decision
    if decision is None:
        if (routed := proxy_line(reply)) is not None:
            return routed
        why = "the upstream routes" if reply.model == AUTO_MODEL else "fixed in config"
        return f"model {reply.model} ({why})"
    parts = [decision.tier, decision.model, decision.source, f"{decision.latency_ms:.0f} ms"]
    if decision.category:
        parts.insert(1, decision.category)
    if reply.error:
        parts.append(reply.error)
    return " · ".join(parts)


def terminal_reader(history: PrivateHistory | Path | None, prompt: str = "you> ") -> ReadLine:
    """Read a message at a prompt_toolkit prompt. Bracketed paste puts a multi-line paste in the
    line as it is; Enter sends it. None on Ctrl-D, or Ctrl-C at the prompt: the chat ends.
    A history file is created readable by its owner only."""
    from prompt_toolkit import PromptSession
    from prompt_toolkit.history import InMemoryHistory

    if isinstance(history, Path):
        history = PrivateHistory(history)
    kept = history.file if history is not None else InMemoryHistory()
    session: PromptSession[str] = PromptSession(history=kept)

    async def read() -> str | None:
        try:
            return await session.prompt_async(prompt)
        except (EOFError, KeyboardInterrupt):
            return None

    return read


@contextlib.contextmanager
def ctrl_c_cancels(task: asyncio.Task[None]) -> Iterator[None]:
    """While an answer is on its way, Ctrl-C cancels it instead of ending the chat."""
    loop = asyncio.get_running_loop()
    try:
        loop.add_signal_handler(signal.SIGINT, task.cancel)
    except (NotImplementedError, RuntimeError, ValueError):  # no signals here (Windows, a thread)
        yield
        return
    try:
        yield
    finally:
        loop.remove_signal_handler(signal.SIGINT)


async def run_console(
    core: BotCore, name: str, read: ReadLine, out: Console, conv: str | None = None
) -> None:
    """Chat until end of input or /quit, in the conversation console:<conv> (default: the
    name; two windows with different --conv are two conversations)."""
    conv_key = f"console:{conv or name}"
    user = ChatUser("console", name, name)
    turns = Turns(core.agent, core.admin)
    if not core.upstream.configured:
        out.print(f"[yellow]{escape(MISSING_HINT)}[/yellow]")
    out.print(f"[dim]/help for commands, /quit to leave · conversation {escape(conv_key)}[/dim]")
    while True:
        line = await read()
        if line is None or line.strip() in QUIT:
            break
        text = line.strip()
        if not readable(text):  # nothing to read: blanks, zero-width or control characters
            continue
        answer = asyncio.create_task(_answer(turns, user, conv_key, text, out))
        try:
            with ctrl_c_cancels(answer):
                await answer
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if not answer.cancelled() or (current is not None and current.cancelling()):
                raise  # the chat itself is being stopped (a signal), not just this answer
            out.print("[dim](cancelled)[/dim]")
        except Exception as exc:  # one failed message must not end the chat
            log.exception("console message failed")
            out.print(f"[red]error: {escape(type(exc).__name__)}; the chat goes on[/red]")


class TypedAnswer:
    """A streamed answer on the terminal: each update prints only what is not on screen yet."""

    def __init__(self, out: Console) -> None:
        self.out = out
        self.shown = ""
        self.ended = False

    def _write(self, text: str) -> None:
        self.out.print(text, end="", markup=False, highlight=False, soft_wrap=True)

    def update(self, so_far: str) -> None:
        common = os.path.commonprefix([self.shown, so_far])
        # Text that changed behind what is shown (a broken stream's trimmed end, then the
        # apology) continues on a new line rather than rewriting the terminal.
        self._write(("" if common == self.shown else "\n") + so_far[len(common) :])
        self.shown = so_far

    async def finish(self, text: str | None) -> None:
        """The whole answer: the rest of it (an apology after a broken stream), then a newline."""
        if text is not None:
            self.update(text)
        self.end()

    def end(self) -> None:
        """End the line the answer is on (once)."""
        if self.shown and not self.ended:
            self._write("\n")
        self.ended = True


class ConsoleTurn:
    """Where one message is answered at the terminal: no typing indicator (the answer prints
    as it is written), no pictures."""

    pictures = False

    def __init__(self, out: Console) -> None:
        self.out = out
        self.typed = TypedAnswer(out)

    def stream(self) -> TypedAnswer:
        return self.typed

    async def typing(self, replied: asyncio.Event) -> None:
        return

    async def send(self, answer: Answer) -> None:
        assert isinstance(answer, Text)  # no pictures asked for
        self.out.print(answer.text, markup=False, highlight=False)


async def _answer(turns: Turns, user: ChatUser, conv_key: str, text: str, out: Console) -> None:
    turn = ConsoleTurn(out)
    command = parse_command(text)
    if command is not None:
        await turns.command(turn, conv_key, user, command)
        if command.name == "help":
            out.print(
                f"This window is the conversation {conv_key}; `crabbot chat --conv NAME` in"
                " another window starts another one.",
                markup=False,
                highlight=False,
            )
        return
    try:
        reply = await turns.answer(turn, conv_key, user, Incoming(text))
    except BaseException:  # cancelled with Ctrl-C: what was shown stays, the line ends
        turn.typed.end()
        raise
    out.print(f"[dim]{escape(decision_line(reply))}[/dim]", highlight=False)
