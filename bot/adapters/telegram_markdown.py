"""Telegram formatting by telegramify-markdown: the model's Markdown becomes plain text plus
MessageEntity pairs (no parse mode, so no escaping to get wrong), keeping every character the
model wrote outside Markdown syntax; when Telegram refuses some formatting, only that part is
dropped and the piece goes again with the rest."""

from __future__ import annotations

import itertools
import logging
import re
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import telegramify_markdown
from telegram import Message, MessageEntity
from telegram.constants import MessageLimit
from telegram.error import BadRequest
from telegramify_markdown import converter

log = logging.getLogger(__name__)

T = TypeVar("T")
BREAKS = ("SoftBreak", "HardBreak")
SPOILER_TAGS = {"<tg-spoiler>", "</tg-spoiler>"}  # what the library's ||spoiler|| becomes
MAX_TRIES = 4  # a piece's sends: formatted, then at most three times with less formatting
REFUSED_URL = re.compile(r"URL '(?P<url>.*)' is invalid", re.DOTALL | re.IGNORECASE)
_config = telegramify_markdown.RenderConfig.isolated()


class _TextKeepingWalker(converter.EventWalker):
    """The library's walker, except that what CommonMark reads as raw HTML stays as text (a
    chat message carries no HTML: `in <module>`, `a<b and b>c`, `List<int>` are words), and a
    continuation line of a paragraph keeps its indentation (a traceback stays readable)."""

    def __init__(self, config: telegramify_markdown.RenderConfig, source: str) -> None:
        super().__init__(config, source)
        self._line_start: int | None = None  # source offset just after a line break

    def _handle_event(self, event: Any) -> None:
        payload, where = event, None
        if isinstance(event, tuple) and len(event) == 2 and isinstance(event[1], dict):
            payload, where = event
        if self._line_start is not None and where is not None and self._at_top_level():
            indent = self._source_bytes[self._line_start : where["start"]]
            if indent and not indent.strip(b" \t"):
                self._buf.write(indent.decode())
        self._line_start = where["end"] if payload in BREAKS and where is not None else None
        if isinstance(payload, dict) and "InlineHtml" in payload:
            html = payload["InlineHtml"]
            if html.strip().lower() not in SPOILER_TAGS:
                self._on_text(html)
                return
        if isinstance(payload, dict) and "Html" in payload:
            self._on_text(payload["Html"])
            return
        super()._handle_event(event)

    def _at_top_level(self) -> bool:
        """Outside lists, quotes, code and tables, a line's leading blanks are the writer's."""
        return not (
            self._list_stack
            or self._blockquote_scopes
            or self._in_code_block
            or self._in_table_cell
        )

    def _on_start(self, tag: Any, source_range: dict[str, int] | None = None) -> None:
        if tag == "HtmlBlock":  # a block of text like any paragraph
            self._on_start_paragraph(self._source_start(source_range))
            return
        super()._on_start(tag, source_range)

    def _on_end(self, tag: Any) -> None:
        if tag == "HtmlBlock":
            last = self._buf.pop_last()  # the block's lines end with a line break
            self._buf.write(last.rstrip("\r\n"))
            self._on_end_paragraph()
            return
        super()._on_end(tag)


def convert(markdown: str) -> tuple[str, list[telegramify_markdown.MessageEntity]]:
    """telegramify_markdown.convert, with raw HTML kept as the text it is."""
    source, events = converter._parse(markdown, converter.STANDARD_OPTIONS, latex_escape=True)
    text, entities, _segments = _TextKeepingWalker(_config, source).walk(events)
    return text, entities


def to_entities(markdown: str) -> tuple[str, list[MessageEntity]]:
    """Text and entities for `markdown`; the Markdown itself, unformatted, when the conversion
    comes out empty or over Telegram's limit."""
    try:
        text, entities = convert(markdown)
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


def without_refused(entities: list[MessageEntity], error: str) -> list[MessageEntity]:
    """The entities left once what Telegram refused is dropped. Telegram names a bad link's
    URL ("entity URL 'notes.md' is invalid: URL host is empty"): links to it become plain text.
    A refused URL it does not name costs every link; any other refusal, every entity."""
    links = [e for e in entities if e.type == MessageEntity.TEXT_LINK]
    named = REFUSED_URL.search(error)
    # PTB's BadRequest capitalizes its message, lowering the rest: compare without case.
    refused = [e for e in links if named and str(e.url).lower() == named["url"].lower()]
    if refused:
        return [e for e in entities if all(e is not r for r in refused)]
    if "url" in error.lower() and links:
        return [e for e in entities if e.type != MessageEntity.TEXT_LINK]
    return []


def refused_formatting(exc: BadRequest) -> bool:
    """Whether Telegram refused the entities (a bad link, an entity out of range, "can't parse
    entities"), not the message itself (a chat or message gone, a draft where none may be)."""
    error = exc.message.lower()
    return "entit" in error or "url" in error


def not_modified(exc: BadRequest) -> bool:
    """Telegram refuses an edit that changes nothing; for us that edit is done."""
    return "not modified" in exc.message.lower()


Send = Callable[[str, list[MessageEntity]], Awaitable[T]]


class TelegramText:
    """Sends and edits pieces formatted; when Telegram refuses the formatting (counted once a
    piece), only the refused part is dropped."""

    def __init__(self, counters: Counter[str]) -> None:
        self.counters = counters

    async def formatted(self, send: Send[T], markdown: str) -> T | None:
        """`send(text, entities)` for `markdown`, again with less formatting while Telegram
        refuses it; None when an edit turns out to change nothing."""
        text, entities = to_entities(markdown)
        for tries in itertools.count(1):
            try:
                return await send(text, entities)
            except BadRequest as exc:
                if not_modified(exc):
                    return None
                if not entities or not refused_formatting(exc):
                    raise
                if tries == 1:
                    self.counters["markdown_fallbacks"] += 1
                # The refusal quotes the model's words (a URL): kept out of the default level.
                log.info("telegram refused the formatting; sending the piece with less")
                log.debug("telegram's refusal: %s", exc.message)
                entities = without_refused(entities, exc.message) if tries < MAX_TRIES - 1 else []
        raise AssertionError("unreachable: the last try returns or raises")

    async def reply(self, message: Message, markdown: str, *, quote: bool) -> Message:
        """A new message answering `message`."""

        async def send(text: str, entities: list[MessageEntity]) -> Message:
            return await message.reply_text(text, entities=entities, do_quote=quote)

        sent = await self.formatted(send, markdown)
        assert sent is not None  # only an edit can be "not modified"
        return sent

    async def edit(self, sent: Message, markdown: str) -> None:
        """Replace the text of a message the bot sent."""

        async def send(text: str, entities: list[MessageEntity]) -> None:
            await sent.edit_text(text, entities=entities)

        await self.formatted(send, markdown)
