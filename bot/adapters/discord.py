"""The Discord adapter (discord.py 2.x): answers mentions and DMs, per channel or thread, with
typing, replies streamed by editing in place in 2000-character pieces, and the /routing, /reset
and /help slash commands."""

from __future__ import annotations

import asyncio
import io
import logging
import re
from typing import Literal

import discord
from discord import app_commands

from bot.adapters.discord_media import (
    image_attachments,
    read_images,
    read_sound,
    sound_attachment,
)
from bot.adapters.discord_stream import MESSAGE_LIMIT, DiscordSurface
from bot.admin import CHART_CAPTION, COMMANDS, HELP
from bot.agent import Prepare, Reply
from bot.chat_user import ChatUser
from bot.incoming import Incoming, Quote
from bot.runtime import BotCore
from bot.split import split_message
from bot.streaming import StreamedReply

log = logging.getLogger(__name__)
Mode = Literal["live", "shadow", "off"]  # discord.py turns a Literal into the command's choices


def conv_key(channel_id: int) -> str:
    """discord:<channel_or_thread_id> (a thread is a channel of its own)."""
    return f"discord:{channel_id}"


def chat_user(user: discord.abc.User) -> ChatUser:
    return ChatUser("discord", user.id, user.display_name)


def replied_to(message: discord.Message) -> discord.Message | None:
    """The message this one replies to, from the gateway's copy (never fetched: an await here
    would let a later message overtake this one)."""
    reference = message.reference
    if reference is None:
        return None
    replied = reference.resolved if isinstance(reference.resolved, discord.Message) else None
    return replied or reference.cached_message


def block(text: str) -> str:
    """A code block keeps the stats' columns readable on a phone."""
    return f"```\n{text}\n```"


def chart_file(png: bytes) -> discord.File:
    return discord.File(io.BytesIO(png), filename="crabbot-routing.png", description=CHART_CAPTION)


def build_commands(core: BotCore) -> list[app_commands.Command | app_commands.Group]:
    """The slash commands; the admin check lives in the shared Admin, not in Discord perms."""
    admin = core.admin
    routing = app_commands.Group(name="routing", description=COMMANDS["routing"])

    @routing.command(name="stats", description="how messages were routed (admins)")
    @app_commands.describe(chart="the last week as a picture instead")
    async def stats(interaction: discord.Interaction, chart: bool = False) -> None:
        user = chat_user(interaction.user)
        # Discord wants an answer within 3 s; the query (or the drawing) may take longer.
        await interaction.response.defer(ephemeral=True, thinking=True)
        if chart and admin.is_admin(user):
            png = await admin.stats_chart(user, "/routing stats chart")
            assert png is not None
            await interaction.followup.send(file=chart_file(png), ephemeral=True)
            return
        text = await admin.stats(user)
        await interaction.followup.send(
            block(text) if admin.is_admin(user) else text, ephemeral=True
        )

    @routing.command(name="mode", description="how routing decides (admins)")
    @app_commands.describe(mode="live: local signal first; shadow: LLM decides; off: no routing")
    async def mode(interaction: discord.Interaction, mode: Mode) -> None:
        text = await admin.set_mode(chat_user(interaction.user), mode)
        await interaction.response.send_message(text, ephemeral=True)

    @app_commands.command(name="reset", description=COMMANDS["reset"])
    async def reset(interaction: discord.Interaction) -> None:
        text = await admin.reset(conv_key(interaction.channel_id or 0))
        await interaction.response.send_message(text)

    @app_commands.command(name="whoami", description=COMMANDS["whoami"])
    async def whoami(interaction: discord.Interaction) -> None:
        await interaction.response.send_message(
            admin.whoami(chat_user(interaction.user)), ephemeral=True
        )

    @app_commands.command(name="help", description=COMMANDS["help"])
    async def help_(interaction: discord.Interaction) -> None:
        await interaction.response.send_message(HELP, ephemeral=True)

    return [routing, reset, whoami, help_]


class CrabbotDiscord(discord.Client):
    def __init__(self, core: BotCore) -> None:
        intents = discord.Intents.default()
        intents.message_content = True  # privileged: enable it in the developer portal
        # The model's words must never ping @everyone or a role.
        super().__init__(intents=intents, allowed_mentions=discord.AllowedMentions.none())
        self.core = core
        self.tree = app_commands.CommandTree(self)
        for command in build_commands(core):
            self.tree.add_command(command)

    async def setup_hook(self) -> None:
        if self.core.config.discord.sync_commands:
            await self.tree.sync()

    def addressed_text(self, message: discord.Message) -> str | None:
        """The text meant for the bot, without its mention; None when it is not for the bot."""
        me = self.user
        if me is None or message.author.bot:
            return None
        private = isinstance(message.channel, discord.DMChannel)
        mentioned = any(user.id == me.id for user in message.mentions)
        # A reply to the bot is for it, as on Telegram, also when its ping was turned off.
        replied = replied_to(message)
        if not (private or mentioned or (replied is not None and replied.author.id == me.id)):
            return None
        return re.sub(rf"<@!?{me.id}>", "", message.content).strip()

    def quoted(self, message: discord.Message) -> Quote | None:
        """The message this one replies to, from the gateway's copy."""
        replied = replied_to(message)
        if replied is None or not replied.content.strip():
            return None
        mine = self.user is not None and replied.author.id == self.user.id
        return Quote("crabbot" if mine else replied.author.display_name, replied.content)

    def with_pictures(
        self, pictures: list[discord.Attachment], text: str, quote: Quote | None
    ) -> Prepare:
        """Reads the pictures in the message's turn, so a slow download keeps the order."""
        settings = self.core.config.images

        async def prepare() -> Incoming:
            images = await read_images(pictures, settings, text)
            return Incoming(text, quote=quote, images=images, kind="photo")

        return prepare

    def with_sound(self, sound: discord.Attachment, text: str, quote: Quote | None) -> Prepare:
        """Transcribes in the message's turn, so a slow transcription keeps the order."""
        core = self.core

        async def prepare() -> Incoming:
            return await read_sound(sound, core.transcriber, core.config.voice, text, quote)

        return prepare

    async def on_message(self, message: discord.Message) -> None:
        text = self.addressed_text(message)
        if text is None:
            return
        key, user = conv_key(message.channel.id), chat_user(message.author)
        quote = self.quoted(message)
        pictures = image_attachments(message) if self.core.config.images.enabled else []
        sound = sound_attachment(message) if self.core.config.voice.enabled else None
        if (not text and quote is None and not pictures and not sound) or text.startswith("/"):
            chart = await self.core.admin.stats_chart(user, text)
            if chart is not None:
                await message.reply(file=chart_file(chart), mention_author=False)
                return
            answer = await self.core.admin.dispatch(user, key, text or "/help")
            if answer is not None:
                await self.send(message, answer)
                return
        typed = asyncio.Event()
        counters = self.core.router.counters
        stream = StreamedReply(
            DiscordSurface(message, counters), self.core.config.discord.edit_interval_s, counters
        )

        def on_text(so_far: str) -> None:
            typed.set()  # the answer itself shows now
            stream.update(so_far)

        async def deliver(reply: Reply) -> None:
            typed.set()
            await stream.finish(reply.text)

        # Created before any await, so the agent takes this conversation's turn in message order
        # (and delivers within it).
        incoming: Incoming | Prepare = Incoming(text, quote=quote)
        if sound is not None:
            incoming = self.with_sound(sound, text, quote)
        elif pictures:
            incoming = self.with_pictures(pictures, text, quote)

        answering = asyncio.create_task(
            self.core.agent.handle(key, user, incoming, deliver, on_text)
        )
        replied = asyncio.create_task(typed.wait())
        try:
            async with message.channel.typing():
                # Until the reply is ready, or the agent failed before it was.
                await asyncio.wait((answering, replied), return_when=asyncio.FIRST_COMPLETED)
        except discord.HTTPException as exc:  # no typing indicator; the answer still goes out
            log.debug("typing indicator failed: %s", exc)
        finally:
            replied.cancel()
        await answering

    async def send(self, message: discord.Message, text: str) -> None:
        for index, piece in enumerate(split_message(text, MESSAGE_LIMIT)):
            if index == 0 and not isinstance(message.channel, discord.DMChannel):
                # Still sent, unquoted, when the message was deleted meanwhile.
                reference = message.to_reference(fail_if_not_exists=False)
                await message.channel.send(piece, reference=reference, mention_author=False)
            else:
                await message.channel.send(piece)

    async def on_error(self, event_method: str, /, *args: object, **kwargs: object) -> None:
        log.exception("discord handler %s failed", event_method)


def build_client(core: BotCore) -> CrabbotDiscord:
    return CrabbotDiscord(core)
