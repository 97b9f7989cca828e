"""Albums on Telegram, end to end: the real PTB Application gets an album's photos from the fake
Bot API as separate messages sharing a media_group_id, and answers them once, with one request
that shows the model every photo."""

from __future__ import annotations

from typing import Any

import pytest

from tests.bot_helpers import log_rows
from tests.fakes.telegram_api import FakeTelegram
from tests.telegram_helpers import data_url, image_parts, messages_table, running

GROUP, PRIVATE = -1001, 55
JPEG = b"\xff\xd8\xff\xe0" + bytes(range(256)) * 8
MB = 1024 * 1024
# A photo whose only size over 512 px weighs 15 MB: too big under a 1 MB limit.
TOO_BIG = ((90, 68, 1_436), (320, 240, 14_983), (2560, 1920, 15 * MB))
# Short enough to keep the tests quick, long enough for parts fetched together.
QUICK = {"album_wait_s": 0.2}


@pytest.fixture
async def telegram():
    server = await FakeTelegram().start()
    yield server
    await server.stop()


def photos(telegram: FakeTelegram, count: int, tag: bytes = b"") -> list[dict[str, Any]]:
    """`count` photos, each with bytes of its own."""
    return [telegram.photo(JPEG + tag + bytes([number])) for number in range(count)]


def largest(telegram: FakeTelegram, sent: list[dict[str, Any]]) -> list[str]:
    """The data URLs of the photos' largest sizes, as the model should see them."""
    return [data_url(telegram.photo_bytes(photo, 2560)) for photo in sent]


def last_text(request: dict[str, Any]) -> str:
    return request["messages"][-1]["content"][0]["text"]


async def test_album_gets_one_answer_that_sees_every_photo(seeded_db, embedder, upstream, telegram):
    caption = "which of these is ripe?"
    album = photos(telegram, 3)
    async with running(seeded_db, embedder, upstream, telegram, telegram=QUICK) as core:
        await telegram.push_album(PRIVATE, caption, album)
        await telegram.wait_until(lambda: len(telegram.texts(PRIVATE)) == 1)
        rows = await log_rows(core)
        stored = await messages_table(core)
    # Counted once the bot has stopped: no other answer came after the first.
    (reply,) = telegram.texts(PRIVATE)
    assert reply.endswith(f"Mom: {caption} (+3 images)")
    (request,) = [seen.body for seen in upstream.requests]
    assert image_parts(request) == largest(telegram, album)
    assert last_text(request) == f"Mom: {caption}"
    # Routing and memory saw one turn: the caption, and the album as one photo message.
    (row,) = rows
    assert row["prompt"] == caption
    assert stored.split("|")[0] == f"[photo: {caption}]" and stored.count("|") == 1


async def test_group_album_is_for_the_bot_when_its_caption_mentions_it(
    seeded_db, embedder, upstream, telegram
):
    caption = "which of these is ripe?"
    mom, dad = photos(telegram, 3, b"mom"), photos(telegram, 2, b"dad")
    async with running(seeded_db, embedder, upstream, telegram, telegram=QUICK):
        # The caption (with the mention) on the second photo: the parts without one still count.
        album = telegram.album_id()
        ids = [
            await telegram.push_message(
                GROUP,
                caption if number == 1 else "",
                mention=number == 1,
                media=photo | {"media_group_id": album},
            )
            for number, photo in enumerate(mom)
        ]
        # An album among the family, not for the bot.
        await telegram.push_album(GROUP, "our new sofa", dad, user_id=43, first_name="Dad")
        await telegram.wait_until(lambda: len(telegram.texts(GROUP)) == 1)
    (sent,) = telegram.sent(GROUP)
    assert sent["reply_parameters"]["message_id"] == ids[1]  # the reply answers the caption
    (request,) = [seen.body for seen in upstream.requests]
    assert image_parts(request) == largest(telegram, mom)
    assert last_text(request) == f"Mom: {caption}"
    assert len(telegram.downloads) == 3  # Dad's photos were never fetched


async def test_albums_from_two_people_at_once_are_kept_apart(
    seeded_db, embedder, upstream, telegram
):
    people = [  # (user id, name, caption, photos)
        (42, "Mom", "which of these is ripe?", photos(telegram, 3, b"mom")),
        (43, "Dad", "哪个沙发好看？", photos(telegram, 3, b"dad")),
    ]
    albums = [telegram.album_id() for _ in people]
    first_ids: dict[str, int] = {}
    async with running(seeded_db, embedder, upstream, telegram, telegram=QUICK):
        for number in range(3):  # their parts arrive interleaved
            for (user_id, name, caption, album), album_id in zip(people, albums, strict=True):
                message_id = await telegram.push_message(
                    GROUP,
                    caption if number == 0 else "",
                    mention=number == 0,
                    media=album[number] | {"media_group_id": album_id},
                    user_id=user_id,
                    first_name=name,
                )
                first_ids.setdefault(name, message_id)
        await telegram.wait_until(lambda: len(telegram.texts(GROUP)) == 2)
    sent = telegram.sent(GROUP)
    replies = {message["reply_parameters"]["message_id"]: message["text"] for message in sent}
    requests = {last_text(seen.body).split(":")[0]: seen.body for seen in upstream.requests}
    assert len(replies) == len(requests) == 2
    for _user_id, name, caption, album in people:
        assert replies[first_ids[name]].endswith(f"{name}: {caption} (+3 images)")
        assert image_parts(requests[name]) == largest(telegram, album)


async def test_photo_of_an_album_that_cannot_be_read_is_named_and_the_rest_answered(
    seeded_db, embedder, upstream, telegram
):
    caption = "which of these is ripe?"
    album = [telegram.photo(JPEG + b"1"), telegram.photo(JPEG + b"2", TOO_BIG)]
    album.append(telegram.photo(JPEG + b"3"))
    del telegram.files[album[2]["photo"][-1]["file_id"]]  # gone: its download fails
    settings = {"telegram": QUICK, "images": {"max_mb": 1}}
    async with running(seeded_db, embedder, upstream, telegram, **settings) as core:
        await telegram.push_album(PRIVATE, caption, album)
        await telegram.wait_until(lambda: len(telegram.texts(PRIVATE)) == 1)
        stored = await messages_table(core)
    (reply,) = telegram.texts(PRIVATE)
    heading, answer = reply.split("\n\n")
    assert heading.split("\n") == [
        "Photo 2 of 3: That picture is too big for me (15.0 MB; the limit is 1 MB).",
        "Photo 3 of 3: Sorry, I could not download that file. Please send it again.",
    ]
    assert answer.endswith(f"Mom: {caption} (+1 images)")
    (request,) = [seen.body for seen in upstream.requests]
    assert image_parts(request) == largest(telegram, album[:1])
    assert core.counters["image_too_big"] == 1 and core.counters["download_failed"] == 1
    # Memory keeps the question and the answer, not the note above it.
    assert stored.split("|") == [f"[photo: {caption}]", answer]


async def test_album_none_of_whose_photos_can_be_read_gets_one_reply_naming_each(
    seeded_db, embedder, upstream, telegram
):
    album = [telegram.photo(JPEG + bytes([number]), TOO_BIG) for number in range(2)]
    settings = {"telegram": QUICK, "images": {"max_mb": 1}}
    async with running(seeded_db, embedder, upstream, telegram, **settings) as core:
        await telegram.push_album(PRIVATE, "看看哪个熟了", album)
        await telegram.wait_until(lambda: len(telegram.texts(PRIVATE)) == 1)
        rows = await log_rows(core)
    (reply,) = telegram.texts(PRIVATE)
    assert reply.split("\n") == [
        "第 1/2 张：这张图片太大了（15.0 MB，上限 1 MB）。",
        "第 2/2 张：这张图片太大了（15.0 MB，上限 1 MB）。",
    ]
    assert upstream.requests == [] and rows == [] and telegram.downloads == []
    assert core.counters["image_too_big"] == 2


async def test_album_whose_parts_come_in_separate_polls_is_answered_once(
    seeded_db, embedder, upstream, telegram
):
    album, album_id = photos(telegram, 3), telegram.album_id()
    waiting = {"album_wait_s": 1.0}  # each part restarts the wait: only the gaps must fit
    async with running(seeded_db, embedder, upstream, telegram, telegram=waiting):
        for number, photo in enumerate(album):
            caption = "which of these is ripe?" if number == 0 else ""
            await telegram.push_message(
                PRIVATE, caption, media=photo | {"media_group_id": album_id}
            )
            await telegram.wait_fetched()  # the next part comes in a poll of its own
        await telegram.wait_until(lambda: len(telegram.texts(PRIVATE)) == 1)
    (reply,) = telegram.texts(PRIVATE)
    assert reply.endswith("(+3 images)")
    (request,) = [seen.body for seen in upstream.requests]
    assert image_parts(request) == largest(telegram, album)


async def test_album_still_gathering_when_the_bot_stops_is_answered_first(
    seeded_db, embedder, upstream, telegram
):
    album = photos(telegram, 3)
    # A wait no test sits through: only the stop makes the album whole.
    async with running(seeded_db, embedder, upstream, telegram, telegram={"album_wait_s": 10}):
        await telegram.push_album(PRIVATE, "which of these is ripe?", album)
        await telegram.push_message(PRIVATE, "thanks")
        await telegram.wait_fetched()
        assert telegram.texts(PRIVATE) == []  # "thanks" waits for the album sent before it
    replies = telegram.texts(PRIVATE)
    assert len(replies) == 2
    assert replies[0].endswith("Mom: which of these is ripe? (+3 images)")
    assert replies[1].endswith("Mom: thanks")
    assert image_parts(upstream.requests[0].body) == largest(telegram, album)


async def test_forget_right_after_an_album_keeps_nothing_of_it(
    seeded_db, embedder, upstream, telegram
):
    """The album takes its turn when its first photo comes, so a /forget sent while it is still
    gathered reaches it as it reaches any message still being answered: nothing of it is kept.
    (Gathered after the /forget, it was a new message and kept.)"""
    caption = "my bank statement, which month was dearest?"
    async with running(seeded_db, embedder, upstream, telegram, telegram=QUICK) as core:
        await telegram.push_album(PRIVATE, caption, photos(telegram, 2))
        await telegram.push_message(PRIVATE, "/forget")
        await telegram.wait_until(lambda: len(telegram.texts(PRIVATE)) == 2)
        stored = await messages_table(core)
        (row,) = await log_rows(core)
    assert any(reply.endswith(f"Mom: {caption} (+2 images)") for reply in telegram.texts(PRIVATE))
    assert stored == "" and row["prompt"] == ""


async def test_forget_while_a_group_album_mentioning_the_bot_later_gathers_reaches_it(
    seeded_db, embedder, upstream, telegram
):
    """An album for the bot only by a later photo's caption takes its turn once gathered, but
    it came when its first photo did: a /forget sent meanwhile keeps nothing of it either."""
    caption = "my bank statement, which month was dearest?"
    album, album_id = photos(telegram, 3), telegram.album_id()
    async with running(seeded_db, embedder, upstream, telegram, telegram=QUICK) as core:
        for number, photo in enumerate(album):
            await telegram.push_message(
                GROUP,
                caption if number == 1 else "",
                mention=number == 1,
                media=photo | {"media_group_id": album_id},
            )
        await telegram.push_message(GROUP, "/forget")
        await telegram.wait_until(lambda: len(telegram.texts(GROUP)) == 2)
        stored = await messages_table(core)
        (row,) = await log_rows(core)
    assert any(reply.endswith(f"Mom: {caption} (+3 images)") for reply in telegram.texts(GROUP))
    assert stored == "" and row["prompt"] == ""


async def test_album_keeps_ten_photos_at_most(seeded_db, embedder, upstream, telegram):
    album = photos(telegram, 12)
    async with running(seeded_db, embedder, upstream, telegram, telegram=QUICK) as core:
        await telegram.push_album(PRIVATE, "which of these is ripe?", album)
        await telegram.wait_until(lambda: len(telegram.texts(PRIVATE)) == 1)
    (reply,) = telegram.texts(PRIVATE)
    assert reply.endswith("(+10 images)")
    (request,) = [seen.body for seen in upstream.requests]
    assert image_parts(request) == largest(telegram, album[:10])
    assert core.counters["album_parts_dropped"] == 2
