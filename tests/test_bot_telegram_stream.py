"""Streamed replies on Telegram, end to end: the fake upstream streams a word at a time and holds
each chunk until the fake Bot API shows the text so far, so a test sees the answer appear while
it is written (drafts in private chats, one message edited in place in groups); a finished
piece's edit that fails for a passing reason is tried again, never sent twice."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from bot.adapters.telegram_markdown import to_entities
from bot.runtime import BotCore
from router.embedding.embedder import Embedder
from tests.bot_helpers import log_rows
from tests.fakes.openai_api import FakeOpenAI
from tests.fakes.telegram_api import FakeTelegram
from tests.fence_helpers import code_answer, parser_code
from tests.telegram_helpers import running

GROUP, PRIVATE = -1001, 55
ANSWER = "Rice first, then the soup, and the fish goes in last so it stays tender."


@pytest.fixture
async def telegram():
    server = await FakeTelegram().start()
    yield server
    await server.stop()


def drafts(telegram: FakeTelegram, chat_id: int) -> list[str]:
    return [params["text"] for params in telegram.sent(chat_id, "sendMessageDraft")]


def edits(telegram: FakeTelegram, chat_id: int) -> list[str]:
    return [params["text"] for params in telegram.sent(chat_id, "editMessageText")]


async def test_streamed_reply_in_a_private_chat_is_drafted_then_sent(
    seeded_db, embedder, upstream, telegram
):
    upstream.reply = lambda body: ANSWER

    async def shown_as_draft(so_far: str) -> None:
        await telegram.wait_until(lambda: so_far.strip() in drafts(telegram, PRIVATE))

    upstream.gate = shown_as_draft
    async with running(seeded_db, embedder, upstream, telegram, stream=True) as core:
        await telegram.push_message(PRIVATE, "How do I cook dinner?")
        await telegram.wait_until(lambda: telegram.shown(PRIVATE) == [ANSWER])
        (row,) = await log_rows(core)
    # The answer grew in the draft word by word, then went out as one message; nothing edited.
    words = ANSWER.split()
    assert drafts(telegram, PRIVATE)[:3] == [" ".join(words[:n]) for n in (1, 2, 3)]
    assert len(telegram.sent(PRIVATE)) == 1 and edits(telegram, PRIVATE) == []
    draft_ids = {params["draft_id"] for params in telegram.sent(PRIVATE, "sendMessageDraft")}
    assert len(draft_ids) == 1 and 0 not in draft_ids
    assert row["prompt_tokens"] > 0 and row["completion_tokens"] > 0  # usage of a stream


async def test_streamed_reply_in_a_group_edits_one_message_in_place(
    seeded_db, embedder, upstream, telegram
):
    upstream.reply = lambda body: ANSWER

    async def shown_in_place(so_far: str) -> None:
        await telegram.wait_until(lambda: telegram.shown(GROUP) == [so_far.strip()])

    upstream.gate = shown_in_place
    async with running(seeded_db, embedder, upstream, telegram, stream=True) as core:
        message_id = await telegram.push_message(GROUP, "How do I cook dinner?", mention=True)
        await telegram.wait_until(lambda: telegram.shown(GROUP) == [ANSWER])
        (row,) = await log_rows(core)
    (sent,) = telegram.sent(GROUP)  # one message, quoting the question, then edits
    assert sent["text"] == "Rice" and sent["reply_parameters"]["message_id"] == message_id
    assert edits(telegram, GROUP)[:2] == ["Rice first,", "Rice first, then"]
    assert edits(telegram, GROUP)[-1] == ANSWER
    assert drafts(telegram, GROUP) == []  # drafts are for private chats only
    assert row["prompt_tokens"] > 0


async def test_streamed_reply_edits_in_place_where_the_server_has_no_drafts(
    seeded_db, embedder, upstream, telegram
):
    telegram.drafts_supported = False
    upstream.reply = lambda body: ANSWER

    async def draft_tried(so_far: str) -> None:
        # The first reply streams on only once its draft was tried (and refused): a reply whose
        # whole answer came before its first show would try no draft at all.
        await telegram.wait_until(lambda: telegram.sent(PRIVATE, "sendMessageDraft") != [])

    upstream.gate = draft_tried
    async with running(seeded_db, embedder, upstream, telegram, stream=True):
        # One after the other: two replies streaming at once could both try a draft before
        # the first 404 comes back.
        await telegram.push_message(PRIVATE, "How do I cook dinner?")
        await telegram.wait_until(lambda: telegram.shown(PRIVATE) == [ANSWER])
        await telegram.push_message(PRIVATE, "And tomorrow?")
        await telegram.wait_until(lambda: telegram.shown(PRIVATE) == [ANSWER, ANSWER])
    # One 404 turned drafts off for the process: the second reply did not try again.
    assert len(telegram.sent(PRIVATE, "sendMessageDraft")) == 1
    assert len(telegram.sent(PRIVATE)) == 2


async def test_streamed_reply_longer_than_the_limit_continues_in_further_messages(
    seeded_db, embedder, upstream, telegram
):
    paragraph = "A sentence about the family trip to the mountains. " * 9
    long_text = "\n\n".join(f"Day {n}: {paragraph.strip()}" for n in range(20))
    upstream.reply = lambda body: long_text
    async with running(seeded_db, embedder, upstream, telegram, stream=True):
        await telegram.push_message(GROUP, "Tell me a long story", mention=True)
        await telegram.wait_until(lambda: "Day 19" in "".join(telegram.shown(GROUP)))
        await telegram.wait_until(lambda: telegram.shown(GROUP)[-1].endswith("mountains."))
    pieces = telegram.shown(GROUP)
    assert len(pieces) == 3 and all(len(piece) <= 4096 for piece in pieces)
    assert all(piece.endswith(".") for piece in pieces[:-1])
    assert "".join(pieces).replace("\n", "") == long_text.replace("\n", "")


async def test_streamed_code_answer_longer_than_the_limit_is_code_in_every_piece(
    seeded_db, embedder, upstream, telegram
):
    code = parser_code(110)
    upstream.reply = lambda body: code_answer(code)
    async with running(seeded_db, embedder, upstream, telegram, stream=True):
        await telegram.push_message(GROUP, "Write me a parser", mention=True)
        await telegram.wait_until(
            lambda: "".join(telegram.shown(GROUP)).endswith("Call step_0 first.")
        )
    sent = [params for (chat, _), params in sorted(telegram.messages.items()) if chat == GROUP]
    assert len(sent) == 2
    # Each message shows its share of the code as a Python block, indentation and all.
    shares = []
    for params in sent:
        (pre,) = [entity for entity in params["entities"] if entity["type"] == "pre"]
        assert pre["language"] == "python"
        shares.append(params["text"][pre["offset"] : pre["offset"] + pre["length"]])
    assert "\n".join(shares) == code


async def test_streamed_reply_loses_only_the_refused_link(seeded_db, embedder, upstream, telegram):
    answer = "The **recipe** is in [the notes](notes.md), **section 2** and **section 3**."
    shown = "The recipe is in the notes, section 2 and section 3."
    upstream.reply = lambda body: answer

    async def shown_so_far(so_far: str) -> None:
        wanted = to_entities(so_far.strip())[0]
        await telegram.wait_until(lambda: telegram.shown(GROUP)[-1:] == [wanted])

    upstream.gate = shown_so_far
    async with running(seeded_db, embedder, upstream, telegram, stream=True) as core:
        await telegram.push_message(GROUP, "where is it?", mention=True)
        await telegram.wait_until(lambda: telegram.shown(GROUP) == [shown])
    edited = telegram.sent(GROUP, "editMessageText")
    # Each formatted edit with the relative link was refused, then sent again without the link.
    refused = [p for p in edited if any(e["type"] == "text_link" for e in p.get("entities", []))]
    assert refused and core.counters["markdown_fallbacks"] == len(refused)
    # Every edit the family saw kept its bold: never the raw Markdown, never all plain.
    (final,) = [p for p in edited if p["text"] == shown][-1:]
    assert [e["type"] for e in final["entities"]] == ["bold", "bold", "bold"]
    assert all("**" not in text for text in telegram.shown(GROUP))


async def test_private_draft_with_a_refused_link_keeps_drafting(
    seeded_db, embedder, upstream, telegram
):
    answer = "Open [the notes](notes.md) at **page 3** 📖 today"
    upstream.reply = lambda body: answer

    def drafted() -> list[dict]:
        return [p for p in telegram.sent(PRIVATE, "sendMessageDraft") if "page 3" in p["text"]]

    async def drafted_before_the_end(so_far: str) -> None:
        if "📖" in so_far and not so_far.endswith("today"):
            await telegram.wait_until(lambda: bool(drafted()))

    upstream.gate = drafted_before_the_end
    async with running(seeded_db, embedder, upstream, telegram, stream=True) as core:
        await telegram.push_message(PRIVATE, "where?", chat_type="private")
        await telegram.wait_until(
            lambda: telegram.shown(PRIVATE) == ["Open the notes at page 3 📖 today"]
        )
    shown_drafts = [p for p in telegram.sent(PRIVATE, "sendMessageDraft") if "page 3" in p["text"]]
    # Drafts with the link were refused and sent again without it: still drafts, not edits.
    assert shown_drafts and core.counters["draft_errors"] == 0
    assert core.counters["markdown_fallbacks"] >= 1
    assert [e["type"] for e in shown_drafts[-1]["entities"]] == ["bold"]


async def test_streamed_reply_survives_a_failed_edit(seeded_db, embedder, upstream, telegram):
    upstream.reply = lambda body: ANSWER

    async def deleted_once_shown(so_far: str) -> None:
        await telegram.wait_until(lambda: len(telegram.sent(GROUP)) == 1)
        # Someone deletes the half-written reply: every edit of it fails from now on.
        telegram.deleted.add((GROUP, max(key[1] for key in telegram.messages)))

    upstream.gate = deleted_once_shown
    async with running(seeded_db, embedder, upstream, telegram, stream=True) as core:
        await telegram.push_message(GROUP, "How do I cook dinner?", mention=True)
        await telegram.wait_until(lambda: telegram.shown(GROUP) == [ANSWER])
    # The finished answer went out as a new message instead of being lost.
    assert [params["text"] for params in telegram.sent(GROUP)] == ["Rice", ANSWER]
    assert core.counters["stream_edit_fallbacks"] == 1


@asynccontextmanager
async def settle_only(
    db: Path,
    embedder: Embedder,
    upstream: FakeOpenAI,
    telegram: FakeTelegram,
    gate: Callable[[str], Awaitable[None]] | None = None,
) -> AsyncIterator[BotCore]:
    """A group reply whose only edit is its settle: once the first word went out as a message
    (and `gate`), the interval (60 s) holds every preview edit until the answer is finished.
    The block's end waits for the turn to end."""
    upstream.reply = lambda body: ANSWER

    async def first_word_sent(so_far: str) -> None:
        await telegram.wait_until(lambda: len(telegram.sent(GROUP)) == 1)
        if gate is not None:
            await gate(so_far)

    upstream.gate = first_word_sent
    settings = {"group_edit_interval_s": 60.0}
    async with running(db, embedder, upstream, telegram, stream=True, telegram=settings) as core:
        await telegram.push_message(GROUP, "How do I cook dinner?", mention=True)
        yield core


@pytest.mark.parametrize(
    ("troubles", "reason"),
    [
        # Three 429s: the rate limiter's first try and its two retries; then the bot waits.
        pytest.param(["flood"] * 3, "flood", id="flood"),
        pytest.param(["lost_after"], "network", id="landed-unanswered"),
        pytest.param(["lost"], "network", id="lost"),
        pytest.param(["bad_gateway"], "network", id="bad-gateway"),
    ],
)
async def test_settle_edit_that_fails_for_a_passing_reason_is_tried_again_not_sent_twice(
    seeded_db, embedder, upstream, telegram, troubles, reason
):
    telegram.edit_troubles = list(troubles)
    async with settle_only(seeded_db, embedder, upstream, telegram) as core:
        await telegram.wait_until(lambda: telegram.shown(GROUP)[-1:] == [ANSWER])
    # One message holds the whole answer: the preview was edited once the edit went through,
    # and no second copy was sent.
    assert telegram.shown(GROUP) == [ANSWER] and telegram.texts(GROUP) == ["Rice"]
    assert core.counters[f"stream_edit_retries_{reason}"] == 1
    assert core.counters["stream_edit_fallbacks"] == 0
    assert not [name for name in core.counters if name.startswith("stream_edit_failures")]


async def test_settle_edit_still_failing_after_its_tries_sends_the_piece_anew(
    seeded_db, embedder, upstream, telegram
):
    telegram.edit_troubles = ["lost"] * 3
    async with settle_only(seeded_db, embedder, upstream, telegram) as core:
        await telegram.wait_until(lambda: telegram.shown(GROUP) == ["Rice", ANSWER])
    # Three tries, then the whole answer as a new message: shown twice, never cut off.
    assert edits(telegram, GROUP) == [ANSWER] * 3
    assert core.counters["stream_edit_retries_network"] == 2
    assert core.counters["stream_edit_failures_network"] == 1


async def test_settle_edit_of_a_deleted_message_sends_the_piece_anew_at_once(
    seeded_db, embedder, upstream, telegram
):
    async def deleted(so_far: str) -> None:
        telegram.deleted.add((GROUP, max(key[1] for key in telegram.messages)))

    async with settle_only(seeded_db, embedder, upstream, telegram, gate=deleted) as core:
        await telegram.wait_until(lambda: telegram.shown(GROUP) == [ANSWER])
    # "Message to edit not found" is not tried again: the piece went out anew after one edit.
    assert edits(telegram, GROUP) == [ANSWER]
    assert telegram.texts(GROUP) == ["Rice", ANSWER]
    assert core.counters["stream_edit_fallbacks"] == 1
