"""Telegram formatting by telegramify-markdown: the model's Markdown becomes plain text plus
MessageEntity pairs (no parse mode, so no escaping to get wrong); a piece Telegram still rejects
goes again as the text the model wrote."""

from __future__ import annotations

import logging
from collections import Counter

import telegramify_markdown
from telegram import Message, MessageEntity
from telegram.constants import MessageLimit
from telegram.error import BadRequest

log = logging.getLogger(__name__)


def to_entities(markdown: str) -> tuple[str, list[MessageEntity]]:
    """Text and entities for `markdown`; the Markdown itself, unformatted, when the conversion
    comes out empty or over Telegram's limit."""
    try:
        text, entities = telegramify_markdown.convert(markdown)
    except Exception:  # a converter bug must cost the formatting, never the reply
        log.exception("markdown conversion failed; sending plain text")
        return markdown, []
    text = text.rstrip()  # a list or a code block at the end leaves a newline behind
    size = telegramify_markdown.utf16_len(text)
    if not text or size > MessageLimit.MAX_TEXT_LENGTH:
        return markdown, []
    kept = []
    for entity in entities:
        if entity.offset < size:
            length = min(entity.length, size - entity.offset)
            kept.append(MessageEntity(**(entity.to_dict() | {"length": length})))
    return text, kept


def not_modified(exc: BadRequest) -> bool:
    """Telegram refuses an edit that changes nothing; for us that edit is done."""
    return "not modified" in exc.message.lower()


class TelegramText:
    """Sends and edits pieces formatted, falling back to plain text (counted) when refused."""

    def __init__(self, counters: Counter[str]) -> None:
        self.counters = counters

    def _fell_back(self, exc: BadRequest) -> None:
        log.info("telegram refused the formatting (%s); sending plain text", exc.message)
        self.counters["markdown_fallbacks"] += 1

    async def reply(self, message: Message, markdown: str, *, quote: bool) -> Message:
        """A new message answering `message`."""
        text, entities = to_entities(markdown)
        try:
            return await message.reply_text(text, entities=entities, do_quote=quote)
        except BadRequest as exc:
            if not entities:
                raise
            self._fell_back(exc)
            return await message.reply_text(markdown, do_quote=quote)

    async def edit(self, sent: Message, markdown: str) -> None:
        """Replace the text of a message the bot sent."""
        text, entities = to_entities(markdown)
        try:
            await sent.edit_text(text, entities=entities)
            return
        except BadRequest as exc:
            if not_modified(exc):
                return
            if not entities:
                raise
            self._fell_back(exc)
        try:
            await sent.edit_text(markdown)
        except BadRequest as exc:
            if not not_modified(exc):
                raise
