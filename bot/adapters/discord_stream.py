"""Where a streamed reply appears on Discord: one message per 2000-character piece, edited in
place while the answer is written (as llmcord does); a finished piece's edit that fails for a
passing reason is tried again, one the message cannot take is sent anew."""

from __future__ import annotations

from collections import Counter

import aiohttp
import discord

from bot.edit_retry import RETRY_PAUSE_S, EditFailure, edit_or_send_anew

MESSAGE_LIMIT = 2000


def edit_failure(exc: Exception) -> EditFailure | None:
    """A failed edit of a Discord message: a rate limit (discord.py's own waits spent, or
    Cloudflare's), a 5xx (after discord.py's retries), a timeout or a lost connection (which
    discord.py lets through as aiohttp's) pass; 404 Unknown Message, 403 and the like do not."""
    if isinstance(exc, discord.RateLimited):  # raised only under a max_ratelimit_timeout
        return EditFailure("flood", exc.retry_after)
    if isinstance(exc, discord.HTTPException):
        if exc.status == 429:
            return EditFailure("flood", retry_after_s(exc))
        if exc.status >= 500:
            return EditFailure("server", RETRY_PAUSE_S)
        return EditFailure("refused")
    if isinstance(exc, TimeoutError):
        return EditFailure("timeout", RETRY_PAUSE_S)
    if isinstance(exc, aiohttp.ClientError | OSError):
        return EditFailure("network", RETRY_PAUSE_S)
    return None


def retry_after_s(exc: discord.HTTPException) -> float:
    """The Retry-After header's seconds (Discord and Cloudflare both send it on a 429)."""
    try:
        return max(0.0, float(exc.response.headers.get("Retry-After", RETRY_PAUSE_S)))
    except ValueError:
        return RETRY_PAUSE_S


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
        if index not in self.sent:
            await self._put(index, text)  # a new message: no edit to fall back from
            return

        async def send_anew() -> None:
            self.sent[index] = await self.message.channel.send(text)
            self.texts[index] = text

        await edit_or_send_anew(
            lambda: self._put(index, text), send_anew, edit_failure, self.counters
        )

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
