"""Photos and pictures sent as files on Telegram, end to end: the real PTB Application gets them
from the fake Bot API, downloads them through getFile, and the vision model gets an image part."""

from __future__ import annotations

import base64

import pytest

from tests.bot_helpers import log_rows
from tests.fakes.telegram_api import FakeTelegram
from tests.telegram_helpers import running

GROUP, PRIVATE = -1001, 55
JPEG = b"\xff\xd8\xff\xe0" + bytes(range(256)) * 8
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4


@pytest.fixture
async def telegram():
    server = await FakeTelegram().start()
    yield server
    await server.stop()


def image_parts(request: dict) -> list[str]:
    content = request["messages"][-1]["content"]
    return [part["image_url"]["url"] for part in content if part["type"] == "image_url"]


async def messages_table(core) -> str:
    async with core.router.conn.execute("SELECT group_concat(content, '|') FROM messages") as c:
        return (await c.fetchone())[0]


async def test_captioned_photo_goes_to_the_vision_model_routed_on_the_caption(
    seeded_db, embedder, upstream, telegram
):
    caption = "what plant is this?"
    async with running(seeded_db, embedder, upstream, telegram) as core:
        await telegram.push_message(GROUP, caption, mention=True, media=telegram.photo(JPEG))
        await telegram.wait_until(lambda: len(telegram.texts(GROUP)) == 1)
        (row,) = await log_rows(core)
        stored = await messages_table(core)
    # The largest size was fetched and sent whole, as a JPEG data URL beside the caption.
    assert telegram.downloads == ["media/file-2.jpg"]
    (request,) = upstream.requests
    assert image_parts(request) == [f"data:image/jpeg;base64,{base64.b64encode(JPEG).decode()}"]
    assert request["messages"][-1]["content"][0] == {"type": "text", "text": f"Mom: {caption}"}
    assert request["model"] == row["model"] and row["prompt"] == caption
    assert telegram.texts(GROUP)[0].endswith(f"Mom: {caption} (+1 images)")
    # Memory reads as a conversation; the picture itself is not kept.
    assert stored.startswith(f"[photo: {caption}]|")
    assert base64.b64encode(JPEG).decode()[:40] not in stored


async def test_photo_without_caption_routes_to_the_image_tier(
    seeded_db, embedder, upstream, telegram
):
    running_with = {"routing": {"image_tier": "strong"}}
    async with running(seeded_db, embedder, upstream, telegram, **running_with) as core:
        await telegram.push_message(PRIVATE, "", media=telegram.photo(JPEG))
        await telegram.wait_until(lambda: len(telegram.texts(PRIVATE)) == 1)
        (row,) = await log_rows(core)
        history = await core.memory.history(f"telegram:{PRIVATE}")
    assert (row["tier"], row["source"], row["category"]) == ("strong", "fixed", None)
    assert "image without text" in row["error"] and "image_tier" in row["error"]
    assert upstream.models == [core.config.models.strong]
    assert len(image_parts(upstream.requests[0])) == 1
    assert history[0].content == "[photo]"


async def test_picture_sent_as_a_file_is_read_as_an_image(seeded_db, embedder, upstream, telegram):
    async with running(seeded_db, embedder, upstream, telegram):
        media = telegram.document(PNG, "image/png", "menu.png")
        await telegram.push_message(PRIVATE, "翻译这个菜单", media=media)
        await telegram.wait_until(lambda: len(telegram.texts(PRIVATE)) == 1)
    (url,) = image_parts(upstream.requests[0])
    assert url == f"data:image/png;base64,{base64.b64encode(PNG).decode()}"


async def test_photo_too_big_or_of_an_unread_type_gets_a_clear_reply(
    seeded_db, embedder, upstream, telegram
):
    async with running(seeded_db, embedder, upstream, telegram, images={"max_mb": 5}) as core:
        huge = telegram.document(PNG, "image/png", "scan.png", size=12 * 1024 * 1024)
        await telegram.push_message(PRIVATE, "看看这个", media=huge)
        heic = telegram.document(PNG, "image/heic", "IMG_0001.heic")
        await telegram.push_message(PRIVATE, "what is this?", media=heic)
        await telegram.wait_until(lambda: len(telegram.texts(PRIVATE)) == 2)
        rows = await log_rows(core)
    too_big, wrong_type = telegram.texts(PRIVATE)
    assert too_big == "这张图片太大了（12.0 MB，上限 5 MB）。"
    assert wrong_type == "I can read JPEG, PNG, WebP and GIF pictures, not image/heic."
    # Refused before anything was downloaded, routed or asked.
    assert telegram.downloads == [] and upstream.requests == [] and rows == []
    assert core.counters["image_too_big"] == 1
    assert core.counters["image_type"] == 1


async def test_group_photo_not_for_the_bot_is_ignored(seeded_db, embedder, upstream, telegram):
    async with running(seeded_db, embedder, upstream, telegram):
        await telegram.push_message(GROUP, "our new sofa", media=telegram.photo(JPEG))
        await telegram.push_message(GROUP, "hello", mention=True)
        await telegram.wait_until(lambda: len(telegram.texts(GROUP)) == 1)
    assert telegram.downloads == [] and len(upstream.requests) == 1
