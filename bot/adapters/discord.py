"""The Discord adapter (discord.py 2.x): answers mentions and DMs, per channel or thread, with
typing, replies streamed by editing in place in 2000-character pieces, and the /routing, /reset,
/forget, /whoami and /help slash commands."""

from __future__ import annotations

import asyncio
import functools
import io
import logging
import re
from collections import Counter
from typing import Literal

import discord
from discord import app_commands

from bot.access import Where
from bot.adapters.discord_media import (
    image_attachments,
    read_picture,
    read_sound,
    sound_attachment,
)
from bot.adapters.discord_stream import DiscordSurface
from bot.admin import COMMANDS, Answer, Command, Picture, Text, parse_command
from bot.agent import Prepare
from bot.chat_user import ChatUser, user_key_of
from bot.incoming import Incoming, Quote
from bot.runtime import BotCore
from bot.split import split_message
from bot.streaming import StreamedReply
from bot.turns import OPEN_COMMANDS, Turns, read_album

log = logging.getLogger(__name__)
Mode = Literal["live", "shadow", "off"]  # discord.py turns a Literal into the command's choices


def conv_key(channel_id: int) -> str:
    """discord:<channel_or_thread_id> (a thread is a channel of its own)."""
    return f"discord:{channel_id}"


def chat_user(user: discord.abc.User) -> ChatUser:
    return ChatUser("discord", user.id, user.display_name)


def role_ids(user: discord.abc.User) -> tuple[int, ...]:
    """A member's role ids as Discord sent them with the event. Member.roles lists only the
    roles of a server already in the cache, which an interaction's server may not be."""
    if not isinstance(user, discord.Member):
        return ()
    return tuple(int(role) for role in user._roles)


def where(message: discord.Message) -> Where:
    """The channel (or thread, with its parent), the server, and the author's roles."""
    channel = message.channel
    return Where(
        chat=channel.id,
        parent=getattr(channel, "parent_id", None),
        server=message.guild.id if message.guild is not None else None,
        roles=role_ids(message.author),
        private=isinstance(channel, discord.DMChannel),
    )


def interaction_where(interaction: discord.Interaction) -> Where:
    """Where a slash command was used, as `where` tells it for a message."""
    channel = interaction.channel
    return Where(
        chat=interaction.channel_id,
        parent=getattr(channel, "parent_id", None),
        server=interaction.guild_id,
        roles=role_ids(interaction.user),
        private=isinstance(channel, discord.DMChannel),
    )


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


def chart_file(picture: Picture) -> discord.File:
    return discord.File(
        io.BytesIO(picture.png), filename="crabbot-routing.png", description=picture.caption
    )


def shown(answer: Text) -> str:
    return block(answer.text) if answer.table else answer.text


def build_commands(core: BotCore) -> list[app_commands.Command | app_commands.Group]:
    """The slash commands; the admin check lives in the shared Admin, not in Discord perms."""
    admin = core.admin

    def key(interaction: discord.Interaction) -> str:
        return conv_key(interaction.channel_id or 0)

    async def text(interaction: discord.Interaction, command: Command) -> str:
        answer = await admin.answer(chat_user(interaction.user), key(interaction), command)
        assert isinstance(answer, Text)  # no pictures asked for
        return shown(answer)

    async def deferred(interaction: discord.Interaction, command: Command, private: bool) -> None:
        """A command that waits on the database or the routing proxy: Discord wants an answer
        within 3 s, so it hears "thinking" first and the text follows up."""
        await interaction.response.defer(ephemeral=private, thinking=True)
        await interaction.followup.send(await text(interaction, command), ephemeral=private)

    routing = app_commands.Group(name="routing", description=COMMANDS["routing"])

    @routing.command(name="stats", description="how messages were routed (admins)")
    @app_commands.describe(chart="the last week as a picture instead")
    async def stats(interaction: discord.Interaction, chart: bool = False) -> None:
        user = chat_user(interaction.user)
        # Discord wants an answer within 3 s; the query (or the drawing) may take longer.
        await interaction.response.defer(ephemeral=True, thinking=True)
        command = Command("routing", ("stats", "chart") if chart else ("stats",))
        answer = await admin.answer(user, key(interaction), command, pictures=True)
        if isinstance(answer, Picture):
            await interaction.followup.send(file=chart_file(answer), ephemeral=True)
        else:
            await interaction.followup.send(shown(answer), ephemeral=True)

    @routing.command(name="mode", description="how routing decides (admins)")
    @app_commands.describe(mode="live: local signal first; shadow: LLM decides; off: no routing")
    async def mode(interaction: discord.Interaction, mode: Mode) -> None:
        await deferred(interaction, Command("routing", ("mode", mode)), private=True)

    @app_commands.command(name="reset", description=COMMANDS["reset"])
    async def reset(interaction: discord.Interaction) -> None:
        await deferred(interaction, Command("reset"), private=False)

    @app_commands.command(name="forget", description=COMMANDS["forget"])
    async def forget(interaction: discord.Interaction) -> None:
        await deferred(interaction, Command("forget"), private=True)

    @app_commands.command(name="whoami", description=COMMANDS["whoami"])
    async def whoami(interaction: discord.Interaction) -> None:
        await interaction.response.send_message(
            await text(interaction, Command("whoami")), ephemeral=True
        )

    @app_commands.command(name="help", description=COMMANDS["help"])
    async def help_(interaction: discord.Interaction) -> None:
        await interaction.response.send_message(
            await text(interaction, Command("help")), ephemeral=True
        )

    return [routing, reset, forget, whoami, help_]


class DiscordTurn:
    """Where one message is answered: typing, a reply edited in place, a file."""

    pictures = True

    def __init__(self, message: discord.Message, interval_s: float, counters: Counter[str]) -> None:
        self.message = message
        self.interval_s = interval_s
        self.counters = counters

    def stream(self) -> StreamedReply:
        surface = DiscordSurface(self.message, self.counters)
        return StreamedReply(surface, self.interval_s, self.counters)

    async def typing(self, replied: asyncio.Event) -> None:
        try:
            async with self.message.channel.typing():
                await replied.wait()
        except discord.HTTPException as exc:  # no typing indicator; the answer still goes out
            log.debug("typing indicator failed: %s", exc)

    async def send(self, answer: Answer) -> None:
        message = self.message
        if isinstance(answer, Picture):
            await message.reply(file=chart_file(answer), mention_author=False)
            return
        surface = DiscordSurface(self.message, self.counters)  # the first piece answers it
        for index, piece in enumerate(split_message(answer.text, surface.limit)):
            await surface.settle(index, piece)


def own_roles(message: discord.Message, bot_id: int) -> list[int]:
    """The bot's own role among the message's role pings: the one its invite created, which
    Discord's autocomplete offers beside the bot (a ping of it is a ping of the bot)."""
    return [r.id for r in message.role_mentions if r.tags and r.tags.bot_id == bot_id]


def without_mention(message: discord.Message, bot_id: int) -> str:
    """The message's words without the bot's mention or its own role's."""
    text = re.sub(rf"<@!?{bot_id}>", "", message.content)
    for role_id in own_roles(message, bot_id):
        text = text.replace(f"<@&{role_id}>", "")
    return text.strip()


class GatedTree(app_commands.CommandTree):
    """The slash commands, behind the same door as messages: someone not let in gets the line
    on how to be let in (only they see it), counted, and the command does nothing; /whoami and
    /help stay open, as they are how one learns one's id."""

    def __init__(self, client: CrabbotDiscord) -> None:
        super().__init__(client)
        self.core = client.core

    async def interaction_check(self, interaction: discord.Interaction, /) -> bool:
        name = interaction.data.get("name") if interaction.data else None
        if name in OPEN_COMMANDS:
            return True
        core, user, place = self.core, chat_user(interaction.user), interaction_where(interaction)
        if core.access.allows(user, place, core.admin.is_admin(user)):
            return True
        # Counted like a message; the line goes every time, as Discord wants an answer to
        # every command and only the one who used it sees this one.
        line = core.access.refusal(user, place) or core.access.line(user, place)
        await interaction.response.send_message(line, ephemeral=True)
        return False


class CrabbotDiscord(discord.Client):
    def __init__(self, core: BotCore) -> None:
        # crabbot never joins a voice channel (a voice message is an attachment): discord.py's
        # two warnings about voice libraries would only puzzle whoever starts it.
        discord.VoiceClient.warn_nacl = discord.VoiceClient.warn_dave = False
        intents = discord.Intents.default()
        intents.message_content = True  # privileged: enable it in the developer portal
        # The model's words must never ping @everyone or a role.
        super().__init__(intents=intents, allowed_mentions=discord.AllowedMentions.none())
        self.core = core
        self.turns = Turns(core.agent, core.admin, core.access)
        self.tree = GatedTree(self)
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
        mentioned = any(user.id == me.id for user in message.mentions) or bool(
            own_roles(message, me.id)
        )
        # A reply to the bot is for it, as on Telegram, also when its ping was turned off.
        replied = replied_to(message)
        if not (private or mentioned or (replied is not None and replied.author.id == me.id)):
            return None
        return without_mention(message, me.id)

    def quoted(self, message: discord.Message) -> Quote | None:
        """The message this one replies to, from the gateway's copy, without the bot's mention
        (the words as the bot read them, when it was for the bot)."""
        replied = replied_to(message)
        if replied is None:
            return None
        me = self.user
        content = replied.content if me is None else without_mention(replied, me.id)
        if not content.strip():
            return None
        if me is not None and replied.author.id == me.id:
            return Quote.own_answer(content)
        author = replied.author
        return Quote(author.display_name, content.strip(), user_key=user_key_of(chat_user(author)))

    def turn(self, message: discord.Message) -> DiscordTurn:
        interval = self.core.config.discord.edit_interval_s
        return DiscordTurn(message, interval, self.core.counters)

    async def on_message(self, message: discord.Message) -> None:
        text = self.addressed_text(message)
        if text is None:
            return
        key, user = conv_key(message.channel.id), chat_user(message.author)
        quote = self.quoted(message)
        pictures = image_attachments(message) if self.core.config.images.enabled else []
        sound = sound_attachment(message) if self.core.config.voice.enabled else None
        if (not text and quote is None and not pictures and not sound) or text.startswith("/"):
            command = parse_command(text or "/help")
            assert command is not None
            await self.turns.command(self.turn(message), key, user, command, where(message))
            return
        # Read in the message's turn (a download, a transcription), so a slow one keeps the order.
        core = self.core
        incoming: Incoming | Prepare = Incoming(text, quote=quote)
        if sound is not None:
            incoming = functools.partial(
                read_sound, sound, core.transcriber, core.config.voice, text, quote
            )
        elif pictures:
            # Each picture on its own, as a Telegram album's: one that cannot be used is named
            # above the answer about the others.
            reads = [functools.partial(read_picture, p, core.config.images, text) for p in pictures]
            incoming = read_album(text, quote, reads, core.counters)
        await self.turns.answer(self.turn(message), key, user, incoming, where(message))

    async def on_error(self, event_method: str, /, *args: object, **kwargs: object) -> None:
        log.exception("discord handler %s failed", event_method)


def build_client(core: BotCore) -> CrabbotDiscord:
    return CrabbotDiscord(core)
