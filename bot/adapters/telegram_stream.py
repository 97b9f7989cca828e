"""Where a streamed reply appears on Telegram: a message draft (sendMessageDraft) in private
chats while the server supports it, else one message per piece edited in place, where a finished
piece's edit that fails for a passing reason is tried again."""

from __future__ import annotations

import logging
from collections import Counter

from telegram import Message, MessageEntity
from telegram.constants import ChatType, MessageLimit
from telegram.error import (
    BadRequest,
    EndPointNotFound,
    InvalidToken,
    NetworkError,
    RetryAfter,
    TelegramError,
    TimedOut,
)

from bot.adapters.telegram_markdown import TelegramText
from bot.adapters.telegram_media import seconds
from bot.edit_retry import RETRY_PAUSE_S, EditFailure, edit_or_send_anew
from bot.split import utf16_units

log = logging.getLogger(__name__)


class Drafts:
    """Whether this process still sends drafts; a server without sendMessageDraft (a 404, which
    PTB reports as InvalidToken outside do_api_request) turns them off for good."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled

    def unsupported(self, exc: TelegramError) -> None:
        log.warning("the Bot API server has no sendMessageDraft (%s); editing in place", exc)
        self.enabled = False


def edit_failure(exc: Exception) -> EditFailure | None:
    """A failed edit of a Telegram message: a flood limit (the rate limiter's own retries spent),
    a timeout, a lost connection or a 5xx (NetworkError) pass; a refusal ("message to edit not
    found", "message can't be edited") does not."""
    if isinstance(exc, RetryAfter):
        return EditFailure("flood", seconds(exc.retry_after) or 0.0)
    if isinstance(exc, TimedOut):
        return EditFailure("timeout", RETRY_PAUSE_S)
    if isinstance(exc, NetworkError) and not isinstance(exc, BadRequest):
        return EditFailure("network", RETRY_PAUSE_S)
    if isinstance(exc, TelegramError):
        return EditFailure("refused")
    return None


class TelegramSurface:
    """One reply to `message`; pieces after the first are further messages."""

    limit: int = MessageLimit.MAX_TEXT_LENGTH

    def __init__(
        self, message: Message, text: TelegramText, drafts: Drafts, counters: Counter[str]
    ) -> None:
        self.message = message
        self.text = text
        self.drafts = drafts
        self.counters = counters
        self.group = message.chat.type != ChatType.PRIVATE
        self.drafting = not self.group
        self.sent: dict[int, Message] = {}
        self.texts: dict[int, str] = {}  # what each sent message says now

    def size(self, text: str) -> int:
        return utf16_units(text)  # Telegram counts UTF-16 units: an emoji is two

    async def show(self, index: int, text: str) -> None:
        if self.drafting and self.drafts.enabled and await self._draft(index, text):
            return
        await self._put(index, text)

    async def settle(self, index: int, text: str) -> None:
        if index not in self.sent:
            await self._put(index, text)  # a new message: no edit to fall back from
            return

        async def send_anew() -> None:
            self.sent[index] = await self.text.reply(self.message, text, quote=False)
            self.texts[index] = text

        await edit_or_send_anew(
            lambda: self._put(index, text), send_anew, edit_failure, self.counters
        )

    async def _put(self, index: int, text: str) -> None:
        sent = self.sent.get(index)
        if sent is None:
            quote = self.group and index == 0
            self.sent[index] = await self.text.reply(self.message, text, quote=quote)
        elif self.texts.get(index) != text:
            await self.text.edit(sent, text)
        self.texts[index] = text

    async def _draft(self, index: int, text: str) -> bool:
        """True when the draft was shown; False: this reply edits in place from now on."""
        message = self.message
        thread = message.message_thread_id if message.is_topic_message else None
        # Non-zero and one per piece: the message id is unique in the chat.
        draft_id = message.message_id * 100 + index + 1

        async def send(body: str, entities: list[MessageEntity]) -> bool:
            return await message.get_bot().send_message_draft(
                message.chat_id, draft_id, body, message_thread_id=thread, entities=entities
            )

        try:
            await self.text.formatted(send, text)  # a refused link costs the link, not the draft
            return True
        except (InvalidToken, EndPointNotFound) as exc:
            self.drafts.unsupported(exc)
        except BadRequest as exc:
            log.info("draft refused (%s); editing in place", exc.message)
            self.counters["draft_errors"] += 1
        self.drafting = False
        return False
