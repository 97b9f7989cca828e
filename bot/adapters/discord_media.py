"""Pictures and sound from Discord: image attachments, checked by their stated type and size, and
voice messages or audio files, transcribed; downloaded from Discord's CDN."""

from __future__ import annotations

import logging

import discord

from bot.config import ImageSettings, VoiceSettings
from bot.incoming import Image, Incoming, Quote
from bot.media import check_image, download_failed, image
from bot.transcriber import Transcriber
from bot.voice import read_voice

log = logging.getLogger(__name__)

MAX_IMAGES = 4  # a message's first pictures; more would cost more than they tell


def image_attachments(message: discord.Message) -> list[discord.Attachment]:
    return [
        attachment
        for attachment in message.attachments
        if (attachment.content_type or "").startswith("image/")
    ][:MAX_IMAGES]


async def read_picture(attachment: discord.Attachment, settings: ImageSettings, text: str) -> Image:
    """One picture; raises Unreadable with the reply to send when it cannot be used (checked by
    its stated type and size before any download)."""
    check_image(settings, attachment.content_type, attachment.size, text)
    try:
        data = await attachment.read()
    except discord.HTTPException as exc:
        log.warning("could not download a Discord attachment: %s", exc)
        raise download_failed(text) from exc
    return image(settings, data, (attachment.content_type or "").split(";")[0], text)


def sound_attachment(message: discord.Message) -> discord.Attachment | None:
    """A voice message (recorded in the app) or an audio file."""
    sounds = [a for a in message.attachments if (a.content_type or "").startswith("audio/")]
    return sounds[0] if sounds else None


async def read_sound(
    attachment: discord.Attachment,
    transcriber: Transcriber,
    settings: VoiceSettings,
    text: str,
    quote: Quote | None,
) -> Incoming:
    async def fetch() -> bytes:
        try:
            return await attachment.read()
        except discord.HTTPException as exc:
            log.warning("could not download a Discord attachment: %s", exc)
            raise download_failed(text) from exc

    return await read_voice(
        transcriber,
        settings,
        download=fetch,
        filename=attachment.filename,
        duration_s=attachment.duration,  # set for voice messages only
        size=attachment.size,
        caption=text,
        quote=quote,
    )
