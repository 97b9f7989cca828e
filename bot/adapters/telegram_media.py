"""Pictures and sound from Telegram: a photo (the largest size under the limit) or an image sent
as a file, a voice message or an audio file; checked, then downloaded through getFile."""

from __future__ import annotations

import logging
from datetime import timedelta

from telegram import Audio, Document, Message, PhotoSize, Voice
from telegram.error import TelegramError

from bot.config import ImageSettings, VoiceSettings
from bot.incoming import Image, Incoming, Quote
from bot.media import MB, check_image, download_failed, image
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
