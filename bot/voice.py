"""Voice messages and audio files as messages: checked (a Groq key, length, size), downloaded,
transcribed by Whisper, and read like text under a short "[voice 0:12] …" quote line."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from bot.config import VoiceSettings
from bot.incoming import Incoming, Quote
from bot.language import media_reply
from bot.media import MB, Unreadable
from bot.transcriber import NO_KEY_REPLY, Transcriber, TranscriptionError

log = logging.getLogger(__name__)

HEADING_LIMIT = 100  # characters of the transcript in the quote line


def clock(seconds: float) -> str:
    """0:12, 3:05, 1:02:03."""
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def heading(duration_s: float | None, transcript: str) -> str:
    """A one-line quote of what was heard, so a mishearing is seen at once."""
    words = " ".join(transcript.split())
    if len(words) > HEADING_LIMIT:
        words = words[: HEADING_LIMIT - 1] + "…"
    length = f" {clock(duration_s)}" if duration_s else ""
    return f"> [voice{length}] {words}"


async def read_voice(
    transcriber: Transcriber,
    settings: VoiceSettings,
    *,
    download: Callable[[], Awaitable[bytes]],
    filename: str,
    duration_s: float | None,
    size: int | None,
    caption: str = "",
    quote: Quote | None = None,
) -> Incoming:
    """The voice message as an Incoming; raises Unreadable with the reply to send when it
    cannot be used (no Groq key, too long or too big, a failed transcription)."""
    if not transcriber.configured:
        raise Unreadable("voice_no_key", NO_KEY_REPLY)
    if duration_s is not None and duration_s > settings.max_duration_s:
        reply = media_reply(
            "voice_too_long", caption, size=clock(duration_s), limit=clock(settings.max_duration_s)
        )
        raise Unreadable("voice_too_long", reply)
    if size is not None and size > settings.max_mb * MB:
        reply = media_reply(
            "voice_too_long", caption, size=f"{size / MB:.1f} MB", limit=f"{settings.max_mb:.0f} MB"
        )
        raise Unreadable("voice_too_big", reply)
    data = await download()
    try:
        transcript = await transcriber.transcribe(data, filename)
    except TranscriptionError as exc:
        log.warning("voice message not transcribed: %s", exc.reason)
        raise Unreadable("transcription_failed", media_reply("voice_failed", caption)) from exc
    log.info(
        "voice message transcribed in %.0f ms (%s)", transcript.latency_ms, transcript.language
    )
    text = f"{caption}\n\n{transcript.text}" if caption.strip() else transcript.text
    return Incoming(
        text,
        quote=quote,
        kind="voice",
        heading=heading(duration_s, transcript.text) if settings.show_transcript else None,
        transcription_ms=transcript.latency_ms,
    )
