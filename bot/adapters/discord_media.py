"""Pictures from Discord: image attachments, checked by their stated type and size, then
downloaded from Discord's CDN."""

from __future__ import annotations

import logging

import discord

from bot.config import ImageSettings
from bot.incoming import Image
from bot.media import check_image, download_failed, image

log = logging.getLogger(__name__)

MAX_IMAGES = 4  # a message's first pictures; more would cost more than they tell


def image_attachments(message: discord.Message) -> list[discord.Attachment]:
    return [
        attachment
        for attachment in message.attachments
        if (attachment.content_type or "").startswith("image/")
    ][:MAX_IMAGES]


async def read_images(
    attachments: list[discord.Attachment], settings: ImageSettings, text: str
) -> tuple[Image, ...]:
    """The pictures; raises Unreadable with the reply to send when one cannot be used."""
    for attachment in attachments:  # every check before any download
        check_image(settings, attachment.content_type, attachment.size, text)
    images = []
    for attachment in attachments:
        try:
            data = await attachment.read()
        except discord.HTTPException as exc:
            log.warning("could not download a Discord attachment: %s", exc)
            raise download_failed(text) from exc
        mime_type = (attachment.content_type or "").split(";")[0]
        images.append(image(settings, data, mime_type, text))
    return tuple(images)
