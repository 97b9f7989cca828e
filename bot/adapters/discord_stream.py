"""Where a streamed reply appears on Discord: one message per 2000-character piece, edited in
place while the answer is written (as llmcord does); an edit that fails is sent anew."""

from __future__ import annotations

import logging
from collections import Counter

import discord

log = logging.getLogger(__name__)

MESSAGE_LIMIT = 2000


class DiscordSurface:
    """One reply to `message`; the first piece answers it (in a server), the rest follow."""

    limit = MESSAGE_LIMIT

    def __init__(self, message: discord.Message, counters: Counter[str]) -> None:
        self.message = message
        self.counters = counters
        self.sent: dict[int, discord.Message] = {}
        self.texts: dict[int, str] = {}

    def size(self, text: str) -> int:
        return len(text)

    async def show(self, index: int, text: str) -> None:
        await self._put(index, text)

    async def settle(self, index: int, text: str) -> None:
        try:
            await self._put(index, text)
        except discord.HTTPException as exc:
            if index not in self.sent:
                raise
            log.warning("could not edit the streamed reply (%s); sending it anew", exc)
            self.counters["stream_edit_fallbacks"] += 1
            self.sent[index] = await self.message.channel.send(text)
            self.texts[index] = text

    async def _put(self, index: int, text: str) -> None:
        sent = self.sent.get(index)
        if sent is None:
            self.sent[index] = await self._send(index, text)
        elif self.texts.get(index) != text:
            await sent.edit(content=text)
        self.texts[index] = text

    async def _send(self, index: int, text: str) -> discord.Message:
        channel = self.message.channel
        if index == 0 and not isinstance(channel, discord.DMChannel):
            # Still sent, unquoted, when the message was deleted meanwhile.
            reference = self.message.to_reference(fail_if_not_exists=False)
            return await channel.send(text, reference=reference, mention_author=False)
        return await channel.send(text)
