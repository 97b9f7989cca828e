"""One turn of a chat, the same on every platform: typing until the answer shows, the answer
streamed as it is written, `Agent.handle`, the reply delivered; or a command answered."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol

from bot.access import Access, Where
from bot.admin import Admin, Answer, Command, Text
from bot.agent import Agent, Prepare, Reply
from bot.chat_user import ChatUser
from bot.incoming import Image, Incoming, Quote
from bot.language import album_photo_left_out
from bot.limits import too_long
from bot.media import Unreadable

log = logging.getLogger(__name__)


class Stream(Protocol):
    """A reply shown while it is written (a StreamedReply on a chat platform)."""

    def update(self, so_far: str) -> None:
        """The answer so far; returns at once."""

    async def finish(self, text: str | None) -> None:
        """The whole answer (None: there is none)."""


class TurnSurface(Protocol):
    """Where one message is answered on a platform: its typing indicator, the stream its reply
    appears in, and how a command's answer is sent."""

    pictures: bool  # whether `send` takes a Picture (else the answer says where to find it)

    def stream(self) -> Stream:
        """A new stream for this message's reply."""
        ...

    async def typing(self, replied: asyncio.Event) -> None:
        """Show that an answer is being written until `replied` is set; never raises."""

    async def send(self, answer: Answer) -> None:
        """Send a command's answer."""


def read_photo(text: str, quote: Quote | None, read: Callable[[], Awaitable[Image]]) -> Prepare:
    """A photo message whose picture `read` downloads in the message's turn, so a slow
    download keeps the order."""

    async def prepare() -> Incoming:
        return Incoming(text, quote=quote, images=(await read(),), kind="photo")

    return prepare


def read_album(
    text: str,
    quote: Quote | None,
    reads: Sequence[Callable[[], Awaitable[Image]]],
    counters: Counter[str],
) -> Prepare:
    """An album's photos, downloaded together in the message's turn, each on its own: one that
    cannot be used is named above the answer about the others and counted by its reason; when
    none can, the reply names each."""

    async def prepare() -> Incoming:
        results = await asyncio.gather(*(read() for read in reads), return_exceptions=True)
        for result in results:  # a bug, not a photo crabbot cannot use: the agent's to handle
            if isinstance(result, BaseException) and not isinstance(result, Unreadable):
                raise result
        images = tuple(result for result in results if isinstance(result, Image))
        left_out = [(n, r) for n, r in enumerate(results, 1) if isinstance(r, Unreadable)]
        total = len(results)
        lines = [
            album_photo_left_out(text, number, total, unreadable.reply)
            if total > 1
            else unreadable.reply
            for number, unreadable in left_out
        ]
        if not images:  # the agent counts the reason it is given, and answers with the lines
            for _number, unreadable in left_out[1:]:
                counters[unreadable.reason] += 1
            raise Unreadable(left_out[0][1].reason, "\n".join(lines))
        for number, unreadable in left_out:
            log.info("photo %d of %d of an album left out: %s", number, total, unreadable.reason)
            counters[unreadable.reason] += 1
        heading = "\n".join(lines) or None
        return Incoming(text, quote=quote, images=images, kind="photo", heading=heading)

    return prepare


# Commands anyone may run: how to be let in starts with them.
OPEN_COMMANDS = frozenset({"whoami", "help", "start"})


class Turns:
    """Answers messages and commands on any surface with one agent and one set of commands,
    for those `access` lets in (everyone when it is None)."""

    def __init__(self, agent: Agent, admin: Admin, access: Access | None = None) -> None:
        self.agent = agent
        self.admin = admin
        self.access = access

    async def _refused(self, surface: TurnSurface, user: ChatUser, where: Where | None) -> bool:
        """True when `user` may not be served here; they got the line on how to be let in."""
        if self.access is None:
            return False
        where = where or Where()
        if self.access.allows(user, where, self.admin.is_admin(user)):
            return False
        line = self.access.refusal(user, where)
        if line is not None:
            await surface.send(Text(line))
        return True

    async def command(
        self,
        surface: TurnSurface,
        conv_key: str,
        user: ChatUser,
        command: Command,
        where: Where | None = None,
    ) -> None:
        if command.name not in OPEN_COMMANDS and await self._refused(surface, user, where):
            return
        answer = await self.admin.answer(user, conv_key, command, pictures=surface.pictures)
        await surface.send(answer)

    async def answer(
        self,
        surface: TurnSurface,
        conv_key: str,
        user: ChatUser,
        incoming: Incoming | Prepare,
        where: Where | None = None,
        came_at: float | None = None,
    ) -> Reply:
        """Answer a message: typing until the reply shows, then the reply streamed and settled.
        Call it before any other await in a handler, so replies keep the messages' order.
        `came_at`: when the message came, for one handed on later (an album gathered).
        A text longer than the platform allows is refused in one line, and a message with
        nothing to read gets the help, both before any model is asked; someone not let in gets
        no model call (and no download or transcription either)."""
        if await self._refused(surface, user, where):
            return Reply(None, None, None, error="not allowed")
        if isinstance(incoming, Incoming):
            refusal = too_long(user.platform, incoming.text)
            if refusal is not None:
                self.agent.counters["too_long_refused"] += 1
                await surface.send(Text(refusal))
                return Reply(refusal, None, None, error="too_long")
            if incoming.is_empty():
                await self.command(surface, conv_key, user, Command("help"))
                return Reply(None, None, None, error="empty")
        replied = asyncio.Event()
        typing = asyncio.create_task(surface.typing(replied))
        stream = surface.stream()

        def on_text(so_far: str) -> None:
            replied.set()  # the answer itself shows now
            stream.update(so_far)

        async def deliver(reply: Reply) -> None:
            replied.set()
            await stream.finish(reply.text)

        try:
            # The agent takes the conversation's turn before anything else is awaited here, and
            # delivers within it, so replies go out in the order the messages came in.
            return await self.agent.handle(conv_key, user, incoming, deliver, on_text, came_at)
        finally:
            replied.set()  # also when the agent failed before any reply
            await asyncio.wait((typing,))
