"""Pictures and sound files a person sends: what crabbot accepts (types, sizes, lengths) and the
clear reply when it cannot use one."""

from __future__ import annotations

from bot.config import ImageSettings
from bot.incoming import Image
from bot.language import media_reply
from router.errors import ReasonError

MB = 1024 * 1024
# What the vision models behind the default tiers read.
IMAGE_TYPES = {"image/jpeg", "image/png", "image/webp", "image/gif"}
# A smaller copy of a picture is worth sending only when its long side reaches this: the tile a
# vision model reads (OpenAI's low detail is one 512x512 view); below it a phone photo's writing,
# the usual reason to send one to crabbot, cannot be read. Of Telegram's sizes (90, 320, 800,
# 1280, 2560 px) 800 is the smallest that passes.
MIN_PHOTO_SIDE = 512


class Unreadable(ReasonError):
    """A message crabbot cannot use; `reason` is a short code (counted), `reply` what the
    person is told."""

    def __init__(self, reason: str, reply: str) -> None:
        super().__init__(reason)
        self.reply = reply


def check_image(
    settings: ImageSettings, mime_type: str | None, size: int | None, text: str
) -> None:
    """Refuse a picture before it is downloaded: an unsupported type, or over the size limit."""
    kind = (mime_type or "").lower()
    if kind not in IMAGE_TYPES:
        raise Unreadable("image_type", media_reply("image_type", text, kind=kind or "this file"))
    if size is not None and size > settings.max_mb * MB:
        raise too_big(settings, size, text)


def too_big(settings: ImageSettings, size: int, text: str) -> Unreadable:
    """A picture over the limit, `size` bytes, in the language of `text`."""
    return Unreadable(
        "image_too_big", media_reply("image_too_big", text, size=size / MB, limit=settings.max_mb)
    )


def image(settings: ImageSettings, data: bytes, mime_type: str, text: str) -> Image:
    """The downloaded picture, checked again (a platform may not have said its size)."""
    check_image(settings, mime_type, len(data), text)
    return Image(data, mime_type.lower())


def download_failed(text: str) -> Unreadable:
    return Unreadable("download_failed", media_reply("download_failed", text))
