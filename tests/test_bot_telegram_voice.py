"""Voice messages and audio files on Telegram, end to end: the real PTB Application downloads them
from the fake Bot API, the real groq SDK sends them to a fake Groq transcription endpoint on
127.0.0.1, and the transcript is routed and answered like text."""

from __future__ import annotations

import pytest

from bot.transcriber import NO_KEY_REPLY
from router import Secrets
from tests.bot_helpers import log_rows
from tests.fakes.telegram_api import FakeTelegram
from tests.telegram_helpers import running

GROUP, PRIVATE = -1001, 55
OGG = b"OggS\x00\x02" + bytes(range(256)) * 16
GROQ_KEY = "gsk-test-voice"


@pytest.fixture
async def telegram():
    server = await FakeTelegram().start()
    yield server
    await server.stop()


def voice_sections(groq_server, **voice):
    """A Groq key and the fake Groq for Whisper; the categorizer stays off (not tested here)."""
    return {
        "secrets": Secrets(groq_api_key=GROQ_KEY, openai_api_key=None, openai_base_url=None),
        "voice": {"base_url": groq_server.base_url} | voice,
        "categorizer": {"enabled": False},
    }


async def test_voice_message_transcription_is_routed_answered_and_quoted(
    seeded_db, embedder, upstream, telegram, groq_server
):
    groq_server.transcript = "晚饭吃什么？"
    async with running(
        seeded_db, embedder, upstream, telegram, **voice_sections(groq_server)
    ) as core:
        await telegram.push_message(PRIVATE, "", media=telegram.voice(OGG, duration=12))
        await telegram.wait_until(lambda: len(telegram.texts(PRIVATE)) == 1)
        (row,) = await log_rows(core)
        history = await core.memory.history(f"telegram:{PRIVATE}")
    # The real groq SDK sent the downloaded file to Whisper, the key in the header only.
    (asked,) = groq_server.transcriptions
    assert asked["model"] == "whisper-large-v3-turbo" and asked["response_format"] == "verbose_json"
    assert asked["file"] == {"filename": "voice.ogg", "data": OGG}
    assert asked["authorization"] == f"Bearer {GROQ_KEY}" and "language" not in asked
    # Routed and answered as the words heard.
    assert row["prompt"] == "晚饭吃什么？"
    assert row["transcription_ms"] > 0  # the transcription's time, on the decision's row
    assert upstream.requests[0].body["messages"][-1]["content"] == "Mom: 晚饭吃什么？"
    (sent,) = telegram.sent(PRIVATE)
    assert sent["text"].startswith("[voice 0:12] 晚饭吃什么？\n")
    assert sent["text"].endswith("Mom: 晚饭吃什么？")
    assert any(entity["type"] == "blockquote" for entity in sent["entities"])
    assert [turn.content for turn in history][0] == "[voice] 晚饭吃什么？"


async def test_audio_file_transcription_keeps_its_name_and_the_quote_line_can_be_off(
    seeded_db, embedder, upstream, telegram, groq_server
):
    groq_server.transcript = "明日の予定を教えて"
    sections = voice_sections(groq_server, show_transcript=False)
    async with running(seeded_db, embedder, upstream, telegram, **sections):
        media = telegram.audio(OGG, duration=5, name="memo.mp3")
        await telegram.push_message(PRIVATE, "", media=media)
        await telegram.wait_until(lambda: len(telegram.texts(PRIVATE)) == 1)
    assert groq_server.transcriptions[0]["file"]["filename"] == "memo.mp3"
    assert telegram.texts(PRIVATE)[0].endswith("Mom: 明日の予定を教えて")
    assert "[voice" not in telegram.texts(PRIVATE)[0]


async def test_voice_message_without_a_groq_key_gets_a_one_line_reply(
    seeded_db, embedder, upstream, telegram
):
    async with running(seeded_db, embedder, upstream, telegram) as core:
        await telegram.push_message(PRIVATE, "", media=telegram.voice(OGG, duration=3))
        await telegram.wait_until(lambda: len(telegram.texts(PRIVATE)) == 1)
        assert await log_rows(core) == []
    assert telegram.texts(PRIVATE) == [NO_KEY_REPLY] and "GROQ_API_KEY" in NO_KEY_REPLY
    assert telegram.downloads == [] and upstream.requests == []


async def test_voice_message_too_long_or_too_big_gets_a_clear_reply(
    seeded_db, embedder, upstream, telegram, groq_server
):
    sections = voice_sections(groq_server, max_duration_s=300, max_mb=5)
    async with running(seeded_db, embedder, upstream, telegram, **sections) as core:
        await telegram.push_message(PRIVATE, "", media=telegram.voice(OGG, duration=900))
        big = telegram.voice(OGG, duration=60, size=8 * 1024 * 1024)
        await telegram.push_message(PRIVATE, "", media=big)
        await telegram.wait_until(lambda: len(telegram.texts(PRIVATE)) == 2)
    assert telegram.texts(PRIVATE) == [
        "That voice message is too long for me (15:00; the limit is 5:00).",
        "That voice message is too long for me (8.0 MB; the limit is 5 MB).",
    ]
    assert telegram.downloads == [] and groq_server.transcriptions == []
    assert (core.counters["voice_too_long"], core.counters["voice_too_big"]) == (1, 1)


async def test_voice_transcription_failure_gets_a_clear_reply_and_the_chat_goes_on(
    seeded_db, embedder, upstream, telegram, groq_server
):
    groq_server.transcription_status = 503
    async with running(
        seeded_db, embedder, upstream, telegram, **voice_sections(groq_server)
    ) as core:
        await telegram.push_message(GROUP, "", mention=True, media=telegram.voice(OGG, 4))
        await telegram.push_message(GROUP, "ok, typing it: dinner at 7?", mention=True)
        await telegram.wait_until(lambda: len(telegram.texts(GROUP)) == 2)
    failed, answered = telegram.texts(GROUP)
    assert failed == "Sorry, I could not make out that voice message. Please try again or type it."
    assert answered.endswith("dinner at 7?")
    assert core.counters["transcription_failed"] == 1
