"""The Telegram adapter (python-telegram-bot v22): answers mentions and replies in groups and
every message in private chats, with typing, streamed and split replies, the shared commands and
PTB's AIORateLimiter for Telegram's flood limits."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import re
import secrets
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

from telegram import BotCommand, Message, MessageEntity, Update
from telegram.constants import ChatAction, ChatType
from telegram.error import TelegramError
from telegram.ext import (
    AIORateLimiter,
    Application,
    ApplicationBuilder,
    CommandHandler,
    ContextTypes,
    Defaults,
    MessageHandler,
    filters,
)

from bot.access import Where
from bot.adapters.telegram_album import Albums, Gathered
from bot.adapters.telegram_markdown import TelegramText
from bot.adapters.telegram_media import read_image, read_voice_message
from bot.adapters.telegram_stream import Drafts, TelegramSurface
from bot.admin import COMMANDS, Answer, Command, Picture, parse_command
from bot.agent import Prepare
from bot.chat_user import ChatUser, user_key_of
from bot.config import TelegramSettings
from bot.incoming import Incoming, Quote
from bot.runtime import BotCore
from bot.streaming import StreamedReply
from bot.turns import Turns, read_album, read_photo

log = logging.getLogger(__name__)

TYPING_REFRESH_S = 4.5  # Telegram shows "typing" for about 5 s per chat action
GROUP_TYPES = {ChatType.GROUP, ChatType.SUPERGROUP}
ALBUMS = "crabbot.albums"  # in bot_data: the albums still gathering, whole when the bot stops
CommandCallback = Callable[[Update, ContextTypes.DEFAULT_TYPE], Coroutine[Any, Any, None]]


def conv_key(message: Message) -> str:
    """telegram:<chat_id>, plus :<topic_id> for a forum topic."""
    if message.is_topic_message and message.message_thread_id is not None:
        return f"telegram:{message.chat_id}:{message.message_thread_id}"
    return f"telegram:{message.chat_id}"


def chat_user(message: Message) -> ChatUser:
    on_behalf = message.sender_chat
    if on_behalf is not None:
        # Posted as the group (an anonymous admin) or a channel: `from` is then a placeholder
        # account every such poster in every group shares, so the chat is who spoke, named by
        # the admin's custom title when they have one.
        name = message.author_signature or on_behalf.title or "someone"
        return ChatUser("telegram", on_behalf.id, name)
    sender = message.from_user
    if sender is None:
        return ChatUser("telegram", message.chat_id, message.chat.title or "someone")
    return ChatUser("telegram", sender.id, sender.first_name or sender.username or str(sender.id))


def where(message: Message) -> Where:
    return Where(chat=message.chat_id, private=message.chat.type == ChatType.PRIVATE)


def for_the_bot(message: Message, bot_id: int, bot_username: str) -> bool:
    """Every message in a private chat; in a group, one that mentions the bot (in its text or
    caption) or replies to it."""
    if message.chat.type not in GROUP_TYPES:
        return True
    kinds: list[str | None] = [MessageEntity.MENTION, MessageEntity.TEXT_MENTION]
    if message.text is not None:
        entities = message.parse_entities(kinds)
    else:
        entities = message.parse_caption_entities(kinds)
    handle = f"@{bot_username}".lower()
    mentioned = any(
        (entity.type == MessageEntity.MENTION and value.lower() == handle)
        or (entity.type == MessageEntity.TEXT_MENTION and entity.user and entity.user.id == bot_id)
        for entity, value in entities.items()
    )
    replied = (
        message.reply_to_message is not None
        and message.reply_to_message.from_user is not None
        and message.reply_to_message.from_user.id == bot_id
    )
    return mentioned or replied


def addressed_text(message: Message, bot_id: int, bot_username: str) -> str | None:
    """The text (or a photo's caption) meant for the bot, without its @mention; None when the
    message is not for it."""
    if not for_the_bot(message, bot_id, bot_username):
        return None
    text = message.text if message.text is not None else message.caption or ""
    return without_mention(text, bot_username)


def without_mention(text: str, bot_username: str) -> str:
    return re.sub(re.escape(f"@{bot_username}"), "", text, flags=re.IGNORECASE).strip()


def quoted(message: Message, bot_id: int, bot_username: str) -> Quote | None:
    """The message this one replies to, as the model and the router should see it: the part
    the person quoted when they selected one, else the whole text or caption (without the
    bot's @mention: the words as the bot read them, when it was for the bot)."""
    replied = message.reply_to_message
    if replied is None:
        return None
    text = (message.quote.text if message.quote else None) or replied.text or replied.caption
    text = without_mention(text or "", bot_username)
    if not text:  # a sticker, a service message (a forum topic's first message)...
        return None
    sender = replied.from_user
    if sender is not None and sender.id == bot_id:
        return Quote.own_answer(text)
    author = chat_user(replied)  # one sent as the group or a channel is that chat's
    return Quote(author.name, text, user_key=user_key_of(author))


class TelegramTurn:
    """Where one message is answered: typing, a reply drafted or edited in place, a photo."""

    pictures = True

    def __init__(
        self,
        message: Message,
        text: TelegramText,
        drafts: Drafts,
        settings: TelegramSettings,
        counters: Counter[str],
    ) -> None:
        self.message = message
        self.text = text
        self.drafts = drafts
        self.counters = counters
        # Telegram allows about one edit a second in a chat, twenty a minute in a group.
        group = message.chat.type != ChatType.PRIVATE
        self.interval_s = settings.group_edit_interval_s if group else settings.edit_interval_s

    def stream(self) -> StreamedReply:
        surface = TelegramSurface(self.message, self.text, self.drafts, self.counters)
        return StreamedReply(surface, self.interval_s, self.counters)

    async def typing(self, replied: asyncio.Event) -> None:
        """AIORateLimiter counts chat actions against the group's message limit, so one may
        wait in its queue: the reply cancels it, never waits for it."""
        refresh = asyncio.create_task(self._keep_typing())
        try:
            await replied.wait()
        finally:
            refresh.cancel()
            await asyncio.wait((refresh,))

    async def _keep_typing(self) -> None:
        while True:
            try:
                await self.message.reply_chat_action(ChatAction.TYPING)
            except TelegramError as exc:  # a lost typing indicator is not worth a failed reply
                log.debug("typing indicator failed: %s", exc)
            await asyncio.sleep(TYPING_REFRESH_S)

    async def send(self, answer: Answer) -> None:
        if isinstance(answer, Picture):
            await self.message.reply_photo(answer.png, caption=answer.caption)
        else:
            await self.message.reply_text(answer.text)


class TelegramBot:
    """The handlers, bound to one BotCore: each turns an update into (conv_key, user, incoming)
    or a command, on the message's TelegramTurn."""

    def __init__(self, core: BotCore) -> None:
        self.core = core
        self.settings = core.config.telegram
        self.text = TelegramText(core.counters)
        self.drafts = Drafts(self.settings.drafts)
        self.turns = Turns(core.agent, core.admin, core.access)
        self.albums = Albums(self.settings.album_wait_s, core.counters)

    def turn(self, message: Message) -> TelegramTurn:
        return TelegramTurn(message, self.text, self.drafts, self.settings, self.core.counters)

    async def on_text(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        message = update.message
        if message is None or not message.text:
            return
        bot = context.bot
        text = addressed_text(message, bot.id, bot.username)
        if text is None:
            return
        quote = quoted(message, bot.id, bot.username)
        if not text and quote is None:
            text = "/help"  # a bare mention; a bare mention on a reply asks about that message
        key, user = conv_key(message), chat_user(message)
        command = parse_command(text)
        if command is not None:
            await self.turns.command(self.turn(message), key, user, command, where(message))
            return
        incoming = Incoming(text, quote=quote)
        await self.turns.answer(self.turn(message), key, user, incoming, where(message))

    @staticmethod
    def _addressed_media(
        update: Update, context: ContextTypes.DEFAULT_TYPE
    ) -> tuple[Message, str, Quote | None] | None:
        """A photo's or a voice message's caption and quoted message, when it is for the bot."""
        message = update.message
        if message is None:
            return None
        text = addressed_text(message, context.bot.id, context.bot.username)
        if text is None:
            return None
        return message, text, quoted(message, context.bot.id, context.bot.username)

    async def on_photo(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """A photo, or a picture sent as a file: to the model as an image part. An album's
        parts go together (on_album)."""
        if update.message is not None and update.message.media_group_id is not None:
            gathered = self.albums.add(update.message)
            if gathered is not None:  # the album's first part answers for all of it
                await self.on_album(update.message, gathered)
            return
        addressed = self._addressed_media(update, context)
        if addressed is None:
            return
        message, text, quote = addressed
        read = functools.partial(read_image, message, self.core.config.images, text)
        incoming = read_photo(text, quote, read)
        await self.turns.answer(
            self.turn(message), conv_key(message), chat_user(message), incoming, where(message)
        )

    async def on_album(self, first: Message, gathered: Gathered) -> None:
        """An album's photos, answered once, the captions as the words. When its first part is
        for the bot (any part in a private chat; a caption that mentions it), the album takes
        its turn in the conversation at once, so what came after it (a /forget) waits for it;
        else it is for the bot when any of its parts is, known once they have all come."""
        came_at = time.time()  # its first photo's arrival: a /forget while it gathers is after
        bot = first.get_bot()
        lead = first
        if not for_the_bot(first, bot.id, bot.username):
            parts = await gathered
            if not any(for_the_bot(part, bot.id, bot.username) for part in parts):
                return
            lead = next((part for part in parts if part.caption), parts[0])  # what it answers

        async def prepare() -> Incoming:  # in its turn, once every part has come
            return await self._album(await gathered)()

        await self.turns.answer(
            self.turn(lead), conv_key(lead), chat_user(lead), prepare, where(lead), came_at=came_at
        )

    def _album(self, parts: list[Message]) -> Prepare:
        """The album read in its turn: every photo, the captions as the words."""
        bot = parts[0].get_bot()
        captions = (without_mention(part.caption or "", bot.username) for part in parts)
        text = "\n".join(caption for caption in captions if caption)
        quotes = (quoted(part, bot.id, bot.username) for part in parts)
        quote = next((found for found in quotes if found is not None), None)
        settings = self.core.config.images
        reads = [functools.partial(read_image, part, settings, text) for part in parts]
        return read_album(text, quote, reads, self.core.counters)

    async def on_voice(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """A voice message or an audio file: transcribed, then answered like text."""
        addressed = self._addressed_media(update, context)
        if addressed is None:
            return
        message, text, quote = addressed
        core = self.core
        incoming = functools.partial(
            read_voice_message, message, core.transcriber, core.config.voice, text, quote
        )
        await self.turns.answer(
            self.turn(message), conv_key(message), chat_user(message), incoming, where(message)
        )

    def on_command(self, name: str) -> CommandCallback:
        """The handler of one command; its CommandHandler has split off the arguments."""

        async def handle(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
            message = update.message
            if message is None:
                return
            command = Command(name, tuple(context.args or ()))
            await self.turns.command(
                self.turn(message), conv_key(message), chat_user(message), command, where(message)
            )

        return handle

    async def on_unknown_command(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """A /command no handler knows gets "Unknown command", as on Discord: in a private chat,
        or in a group when it names this bot (/weather@bot; a bare one may be another bot's)."""
        message = update.message
        if message is None or not message.text:
            return
        head, *arguments = message.text.split()
        name, _, bot = head.removeprefix("/").partition("@")
        private = message.chat.type == ChatType.PRIVATE
        if not (bot.lower() == (context.bot.username or "").lower() if bot else private):
            return
        command = Command(name.lower(), tuple(arguments))
        await self.turns.command(
            self.turn(message), conv_key(message), chat_user(message), command, where(message)
        )

    async def on_error(self, update: object, context: ContextTypes.DEFAULT_TYPE) -> None:
        log.error("telegram handler failed", exc_info=context.error)

    async def post_init(self, application: Application) -> None:
        try:
            await application.bot.set_my_commands(
                [BotCommand(name, description) for name, description in COMMANDS.items()]
            )
        except TelegramError as exc:
            log.warning("could not register the command menu: %s", exc)


def build_application(core: BotCore, token: str, settings: TelegramSettings) -> Application:
    handlers = TelegramBot(core)
    application = (
        ApplicationBuilder()
        .token(token)
        .base_url(settings.base_url)
        .base_file_url(settings.base_file_url)
        .rate_limiter(AIORateLimiter(max_retries=2))
        # A reply to a message deleted meanwhile goes out as a plain message, not as an error.
        .defaults(Defaults(allow_sending_without_reply=True))
        .post_init(handlers.post_init)
        .build()
    )
    # block=False: conversations run at once; the agent keeps each one in order.
    for name in COMMANDS:
        application.add_handler(CommandHandler(name, handlers.on_command(name), block=False))
    application.add_handler(CommandHandler("start", handlers.on_command("help"), block=False))
    application.add_handler(
        MessageHandler(
            filters.UpdateType.MESSAGE & filters.TEXT & ~filters.COMMAND,
            handlers.on_text,
            block=False,
        )
    )
    # After the commands' own handlers: only a command none of them took gets here.
    application.add_handler(
        MessageHandler(
            filters.UpdateType.MESSAGE & filters.COMMAND, handlers.on_unknown_command, block=False
        )
    )
    if core.config.images.enabled:
        application.add_handler(
            MessageHandler(
                filters.UpdateType.MESSAGE & (filters.PHOTO | filters.Document.IMAGE),
                handlers.on_photo,
                block=False,
            )
        )
    if core.config.voice.enabled:
        application.add_handler(
            MessageHandler(
                filters.UpdateType.MESSAGE & (filters.VOICE | filters.AUDIO),
                handlers.on_voice,
                block=False,
            )
        )
    application.add_error_handler(handlers.on_error)
    application.bot_data[ALBUMS] = handlers.albums
    return application


@contextlib.asynccontextmanager
async def polling(application: Application) -> AsyncIterator[Application]:
    """Run the application (long polling) for the duration of the block."""
    async with serving(application, TelegramSettings()):
        yield application


@contextlib.asynccontextmanager
async def serving(
    application: Application, settings: TelegramSettings, webhook_secret: str | None = None
) -> AsyncIterator[Application]:
    """Run the application for the duration of the block: long polling, or with
    `webhook_url` set a webhook server that accepts only requests carrying the secret token
    (a random one per run unless TELEGRAM_WEBHOOK_SECRET gives it)."""
    async with application:
        if application.post_init is not None:
            await application.post_init(application)
        await application.start()
        updater = application.updater
        assert updater is not None
        if settings.webhook_url:
            path = settings.webhook_path.strip("/")
            await updater.start_webhook(
                listen=settings.webhook_listen,
                port=settings.webhook_port,
                url_path=path,
                webhook_url=f"{settings.webhook_url.rstrip('/')}/{path}",
                allowed_updates=[Update.MESSAGE],
                secret_token=webhook_secret or secrets.token_urlsafe(32),
            )
        else:
            await updater.start_polling(allowed_updates=[Update.MESSAGE])
        try:
            yield application
        finally:
            await updater.stop()
            albums = application.bot_data.get(ALBUMS)
            if isinstance(albums, Albums):  # no part comes now: albums still gathering are whole
                albums.close()
            await application.stop()  # waits for the answers being written
