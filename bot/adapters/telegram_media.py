"""Pictures from Telegram: a photo (the largest size under the limit) or an image sent as a file,
checked, then downloaded through getFile."""

from __future__ import annotations

import logging

from telegram import Document, Message, PhotoSize
from telegram.error import TelegramError

from bot.config import ImageSettings
from bot.incoming import Image
from bot.media import MB, check_image, download_failed, image

log = logging.getLogger(__name__)


async def download(attachment: PhotoSize | Document, caption: str) -> bytes:
    try:
        file = await attachment.get_file()
        return bytes(await file.download_as_bytearray())
    except TelegramError as exc:
        log.warning("could not download a file from Telegram: %s", exc)
        raise download_failed(caption) from exc


async def read_image(message: Message, settings: ImageSettings, caption: str) -> Image:
    """The picture in `message`; raises Unreadable with the reply to send when it cannot be
    used (a type the models do not read, too big, a failed download)."""
    attachment: PhotoSize | Document
    if message.photo:
        # Telegram sends every size it made (JPEG); the largest under the limit reads best.
        fitting = [p for p in message.photo if (p.file_size or 0) <= settings.max_mb * MB]
        attachment = fitting[-1] if fitting else message.photo[-1]
        mime_type: str | None = "image/jpeg"
    else:
        assert message.document is not None
        attachment, mime_type = message.document, message.document.mime_type
    check_image(settings, mime_type, attachment.file_size, caption)
    data = await download(attachment, caption)
    return image(settings, data, mime_type or "", caption)
