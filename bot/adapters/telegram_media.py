"""Pictures and sound from Telegram: a photo (the largest of its sizes under the limit, when that
one is worth looking at) or an image sent as a file, a voice message or an audio file; checked,
then downloaded through getFile."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import timedelta

from telegram import Audio, Document, Message, PhotoSize, Voice
from telegram.error import TelegramError

from bot.config import ImageSettings, VoiceSettings
from bot.incoming import Image, Incoming, Quote
from bot.media import MB, MIN_PHOTO_SIDE, check_image, download_failed, image, too_big
from bot.transcriber import Transcriber
from bot.voice import read_voice

log = logging.getLogger(__name__)


async def download(attachment: PhotoSize | Document | Voice | Audio, caption: str) -> bytes:
    try:
        file = await attachment.get_file()
        return bytes(await file.download_as_bytearray())
    except TelegramError as exc:
        log.warning("could not download a file from Telegram: %s", exc)
        raise download_failed(caption) from exc


def photo_size(sizes: Sequence[PhotoSize], settings: ImageSettings, caption: str) -> PhotoSize:
    """Which of the sizes Telegram made of a photo the model sees: the largest under the size
    limit, unless that one is too small to be worth looking at while the photo itself is not;
    then the family is told the photo is too big, as for a file."""
    limit = settings.max_mb * MB
    largest = max(sizes, key=lambda p: p.width * p.height)
    # A size Telegram did not weigh is taken; the download is checked again.
    fitting = [p for p in sizes if p.file_size is None or p.file_size <= limit]
    best = max(fitting, key=lambda p: p.width * p.height, default=None)
    if best is not None and (best is largest or max(best.width, best.height) >= MIN_PHOTO_SIDE):
        return best
    assert largest.file_size is not None  # else it would fit
    raise too_big(settings, largest.file_size, caption)


async def read_image(message: Message, settings: ImageSettings, caption: str) -> Image:
    """The picture in `message`; raises Unreadable with the reply to send when it cannot be
    used (a type the models do not read, too big, a failed download)."""
    attachment: PhotoSize | Document
    mime_type: str | None
    if message.photo:
        attachment, mime_type = photo_size(message.photo, settings, caption), "image/jpeg"
    else:
        assert message.document is not None
        attachment, mime_type = message.document, message.document.mime_type
    check_image(settings, mime_type, attachment.file_size, caption)
    data = await download(attachment, caption)
    return image(settings, data, mime_type or "", caption)


def seconds(duration: timedelta | int | None) -> float | None:
    """PTB gives durations as int seconds, or as timedelta when PTB_TIMEDELTA is set."""
    if duration is None:
        return None
    return duration.total_seconds() if isinstance(duration, timedelta) else float(duration)


async def read_voice_message(
    message: Message,
    transcriber: Transcriber,
    settings: VoiceSettings,
    caption: str,
    quote: Quote | None,
) -> Incoming:
    """A voice message (OGG/Opus) or an audio file, transcribed."""
    sound: Voice | Audio
    if message.voice is not None:
        sound, filename = message.voice, "voice.ogg"
    else:
        assert message.audio is not None
        sound, filename = message.audio, message.audio.file_name or "audio.mp3"

    async def fetch() -> bytes:
        return await download(sound, caption)

    return await read_voice(
        transcriber,
        settings,
        download=fetch,
        filename=filename,
        duration_s=seconds(sound.duration),
        size=sound.file_size,
        caption=caption,
        quote=quote,
    )
