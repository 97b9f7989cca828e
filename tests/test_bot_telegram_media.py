"""Photos and pictures sent as files on Telegram, end to end: the real PTB Application gets them
from the fake Bot API, downloads them through getFile, and the vision model gets an image part."""

from __future__ import annotations

import base64

import pytest

from tests.bot_helpers import log_rows
from tests.fakes.telegram_api import PHOTO_SIZES, FakeTelegram
from tests.telegram_helpers import data_url, image_parts, messages_table, running

GROUP, PRIVATE = -1001, 55
JPEG = b"\xff\xd8\xff\xe0" + bytes(range(256)) * 8
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4


@pytest.fixture
async def telegram():
    server = await FakeTelegram().start()
    yield server
    await server.stop()


async def test_captioned_photo_goes_to_the_vision_model_routed_on_the_caption(
    seeded_db, embedder, upstream, telegram
):
    caption = "what plant is this?"
    async with running(seeded_db, embedder, upstream, telegram) as core:
        photo = telegram.photo(JPEG)
        await telegram.push_message(GROUP, caption, mention=True, media=photo)
        await telegram.wait_until(lambda: len(telegram.texts(GROUP)) == 1)
        (row,) = await log_rows(core)
        stored = await messages_table(core)
    # The largest size (2560x1920) was fetched and sent whole, as a JPEG data URL beside the
    # caption; none of the smaller ones was downloaded.
    assert telegram.downloads == ["media/file-5.jpg"]
    (request,) = [seen.body for seen in upstream.requests]
    assert image_parts(request) == [data_url(telegram.photo_bytes(photo, 2560))]
    assert request["messages"][-1]["content"][0] == {"type": "text", "text": f"Mom: {caption}"}
    assert request["model"] == row["model"] and row["prompt"] == caption
    assert telegram.texts(GROUP)[0].endswith(f"Mom: {caption} (+1 images)")
    # Memory reads as a conversation; the picture itself is not kept.
    assert stored.startswith(f"[photo: {caption}]|")
    assert base64.b64encode(JPEG).decode()[:40] not in stored


# A photo Telegram sent in five sizes, its largest weighing more than the limit allows.
HEAVY = ((90, 68, 1_436), (320, 240, 14_983), (800, 600, 78_640), (1280, 960, 171_502))


@pytest.mark.parametrize(
    ("sizes", "max_mb", "read"),
    [
        # The photo: a 15 MB original; the 1280 px copy is read, not the thumbnail.
        (HEAVY + ((2560, 1920, 15 * 1024 * 1024),), 10, 1280),
        # Real sizes under a 100 KB limit: 800x600 (77 KB) is the largest that fits.
        (PHOTO_SIZES, 0.1, 800),
        # Sizes listed out of order are still weighed by their pixels, not their place.
        (tuple(reversed(PHOTO_SIZES)), 0.2, 1280),
        # A small picture (its original is 320 px wide) is read as it is.
        (PHOTO_SIZES[:2], 10, 320),
    ],
)
async def test_photo_is_read_at_its_largest_size_under_the_limit(
    seeded_db, embedder, upstream, telegram, sizes, max_mb, read
):
    images = {"max_mb": max_mb}
    async with running(seeded_db, embedder, upstream, telegram, images=images):
        photo = telegram.photo(JPEG, sizes)
        await telegram.push_message(PRIVATE, "what does the sign say?", media=photo)
        await telegram.wait_until(lambda: len(telegram.texts(PRIVATE)) == 1)
    assert len(telegram.downloads) == 1
    assert image_parts(upstream.requests[0].body) == [data_url(telegram.photo_bytes(photo, read))]
    assert telegram.texts(PRIVATE)[0].endswith("(+1 images)")


async def test_photo_whose_every_readable_size_is_too_big_gets_the_too_big_reply(
    seeded_db, embedder, upstream, telegram
):
    # A 50 KB limit leaves the 90 and 320 px thumbnails: too small to read a photo by.
    async with running(seeded_db, embedder, upstream, telegram, images={"max_mb": 0.05}) as core:
        await telegram.push_message(PRIVATE, "看看这个", media=telegram.photo(JPEG))
        await telegram.wait_until(lambda: len(telegram.texts(PRIVATE)) == 1)
        rows = await log_rows(core)
    assert telegram.texts(PRIVATE) == ["这张图片太大了（0.5 MB，上限 0.05 MB）。"]
    assert telegram.downloads == [] and upstream.requests == [] and rows == []
    assert core.counters["image_too_big"] == 1


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
    assert len(image_parts(upstream.requests[0].body)) == 1
    assert history[0].content == "[photo]"


async def test_photo_without_caption_replying_to_the_bot_routes_to_the_image_tier(
    seeded_db, embedder, upstream, telegram
):
    # The quoted answer alone would route as coding (strong); the photo asks about the photo.
    earlier = "Fixed:\n```python\ndef dedupe(xs):\n    return list(dict.fromkeys(xs))\n```"
    async with running(seeded_db, embedder, upstream, telegram) as core:
        await telegram.push_message(
            GROUP, "", media=telegram.photo(JPEG), reply_to_bot=True, replied_text=earlier
        )
        await telegram.wait_until(lambda: len(telegram.texts(GROUP)) == 1)
        (row,) = await log_rows(core)
    image_tier = core.config.routing.image_tier
    assert image_tier != "strong"
    assert (row["tier"], row["source"]) == (image_tier, "fixed")
    assert "image without text" in row["error"]
    assert upstream.models == [core.config.models.for_tier(image_tier)]
    # The model still sees what the photo answers, under the photo's place in the message.
    text = upstream.requests[0].body["messages"][-1]["content"][0]["text"]
    assert text.startswith("Mom: (replying to crabbot:)") and "> def dedupe(xs):" in text


async def test_picture_sent_as_a_file_is_read_as_an_image(seeded_db, embedder, upstream, telegram):
    async with running(seeded_db, embedder, upstream, telegram):
        media = telegram.document(PNG, "image/png", "menu.png")
        await telegram.push_message(PRIVATE, "翻译这个菜单", media=media)
        await telegram.wait_until(lambda: len(telegram.texts(PRIVATE)) == 1)
    (url,) = image_parts(upstream.requests[0].body)
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
