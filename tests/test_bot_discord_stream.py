"""A streamed reply's last edit on Discord, end to end (discord.py's own client, the fake Discord
API): an edit that fails for a passing reason is tried again, never sent twice; one a flood
limit would hold too long is given up, and the piece sent anew."""

from __future__ import annotations

import pytest

from tests.bot_helpers import open_core
from tests.discord_helpers import DM_CHANNEL, dm_channel, logged_in, message

ANSWER = "Rice first, then the soup, and the fish goes in last so it stays tender."


@pytest.fixture
async def settling(seeded_db, embedder, upstream, discord_api):
    """A reply whose only edit is its settle: the first word goes out as a message, then the
    interval (60 s) holds every preview edit until the answer is finished."""
    upstream.reply = lambda body: ANSWER

    async def first_word_sent(so_far: str) -> None:
        await discord_api.wait_until(lambda: len(discord_api.messages) == 1)

    upstream.gate = first_word_sent
    core = await open_core(seeded_db, embedder, upstream.base_url, discord={"edit_interval_s": 60})
    async with logged_in(core) as client:
        yield client


@pytest.mark.parametrize(
    ("trouble", "reason"),
    [
        pytest.param("rate_limited", "flood", id="rate-limited"),
        pytest.param("unavailable", "server", id="unavailable"),
        pytest.param("lost_after", "network", id="landed-unanswered"),
        pytest.param("lost", "network", id="lost"),
    ],
)
async def test_settle_edit_that_fails_for_a_passing_reason_is_tried_again_not_sent_twice(
    settling, discord_api, trouble, reason
):
    discord_api.edit_troubles = [trouble]
    await settling.on_message(message(settling, dm_channel(settling), "dinner?"))
    # One message holds the whole answer: the preview was edited, no second copy was sent.
    assert discord_api.shown(DM_CHANNEL) == [ANSWER]
    assert [body["content"] for _, body in discord_api.messages] == ["Rice"]
    assert settling.core.counters[f"stream_edit_retries_{reason}"] == 1
    assert settling.core.counters["stream_edit_fallbacks"] == 0


async def test_settle_edit_rate_limited_for_too_long_sends_the_piece_anew_at_once(
    settling, discord_api
):
    discord_api.edit_troubles, discord_api.retry_after = ["rate_limited"], 3600
    await settling.on_message(message(settling, dm_channel(settling), "dinner?"))
    # An hour is not waited out: the whole answer goes out anew under the preview.
    assert discord_api.shown(DM_CHANNEL) == ["Rice", ANSWER]
    assert len(discord_api.edits) == 1
    assert settling.core.counters["stream_edit_failures_flood"] == 1
    assert settling.core.counters["stream_edit_retries_flood"] == 0
