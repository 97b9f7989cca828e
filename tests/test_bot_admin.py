"""The shared admin commands, tested once and directly, and the routing stats they print."""

from __future__ import annotations

import time

import pytest

from bot.admin import HELP, REFUSAL, USAGE, Command, Text
from bot.chat_user import ChatUser
from router import RoutingDecision, SignalAnswer
from router.analytics import stats as routing_stats
from router.store import routing_log
from router.store.routing_log import write_decision
from router.store.settings import get_setting
from tests.bot_helpers import DISCORD_ADMIN, TELEGRAM_ADMIN, dispatch, open_core

ADMINS = [
    ChatUser("telegram", TELEGRAM_ADMIN, "Dad"),
    ChatUser("discord", DISCORD_ADMIN, "Dad"),
    ChatUser("console", "me", "me"),
]
OTHERS = [
    ChatUser("telegram", DISCORD_ADMIN, "Kid"),  # an admin id on another platform
    ChatUser("discord", 12, "Kid"),
    ChatUser("telegram", "not-a-number", "Kid"),
]


@pytest.fixture
async def core(seeded_db, embedder):
    core = await open_core(seeded_db, embedder, None)
    yield core
    await core.close()


async def test_only_admins_may_route_and_nothing_changes_otherwise(core):
    for user in OTHERS:
        for command in ("/routing mode off", "/routing stats", "/routing"):
            assert await dispatch(core.admin, user, "c", command) == REFUSAL
        for typed in (("mode", "off"), ("stats",), ("stats", "chart")):  # Discord's slash command
            answer = await core.admin.answer(user, "c", Command("routing", typed), pictures=True)
            assert answer == Text(REFUSAL)
    assert core.router.mode == "live"
    assert await get_setting(core.router.conn, "routing_mode") == "live"
    for user in ADMINS:
        assert core.admin.is_admin(user)


async def test_console_user_is_admin_only_when_config_says_so(seeded_db, embedder):
    core = await open_core(seeded_db, embedder, None, admins={"console": False})
    try:
        assert await dispatch(core.admin, ADMINS[2], "c", "/routing stats") == REFUSAL
    finally:
        await core.close()


async def test_mode_change_answers_old_and_new_and_persists(seeded_db, embedder):
    core = await open_core(seeded_db, embedder, None)
    try:
        answer = await dispatch(core.admin, ADMINS[0], "c", "/routing@crabbot_bot mode SHADOW")
        assert answer == "routing mode: live → shadow"
        assert core.router.mode == "shadow"
        again = await dispatch(core.admin, ADMINS[1], "c", "/routing mode shadow")
        assert again == "routing mode: shadow → shadow (unchanged)"
    finally:
        await core.close()
    core = await open_core(seeded_db, embedder, None, mode="off")
    try:
        assert core.router.mode == "shadow"
    finally:
        await core.close()


@pytest.mark.parametrize(
    "command", ["/routing mode", "/routing mode fast", "/routing stats now", "/routing purge"]
)
async def test_wrong_arguments_get_the_usage_line(core, command):
    assert await dispatch(core.admin, ADMINS[0], "c", command) == USAGE
    assert core.router.mode == "live"


async def test_help_reset_and_other_text(core):
    assert await dispatch(core.admin, OTHERS[0], "c", "/help") == HELP
    assert "/routing stats" in HELP and "/reset" in HELP
    assert await dispatch(core.admin, OTHERS[0], "c", "hello") is None
    assert await dispatch(core.admin, OTHERS[0], "c", "/weather") == (
        "Unknown command /weather, try /help."
    )
    whoami = await dispatch(core.admin, OTHERS[0], "c", "/whoami")
    assert f"user id {OTHERS[0].id}" in whoami and OTHERS[0].platform in whoami
    assert "not an admin" in whoami and "[admins]" in whoami
    assert "(an admin)" in await dispatch(core.admin, ADMINS[0], "c", "/whoami@crabbot_bot")
    await core.memory.add_exchange("telegram:1", "Mom", "hi", "hello")
    await core.memory.add_exchange("telegram:2", "Dad", "hi", "hello")
    assert await dispatch(core.admin, OTHERS[0], "telegram:1", "/reset") == (
        "Forgot this conversation (2 messages)."
    )
    assert await dispatch(core.admin, OTHERS[0], "telegram:1", "/reset") == "Nothing to forget."
    assert len(await core.memory.history("telegram:2")) == 2


def _decision(tier, category, source, llm=None, knn=None, error=None) -> RoutingDecision:
    return RoutingDecision(
        category=category,
        tier=tier,
        model=f"model-{tier}",
        confidence=0.9,
        source=source,
        mode="shadow",
        tier_mapping_version="v2",
        latency_ms=5.0,
        llm=llm,
        knn=knn,
        error=error,
    )


async def test_stats_show_a_request_still_being_answered_as_open(core):
    conn = core.router.conn
    finished, answering = _decision("cheap", "casual", "knn"), _decision("strong", "coding", "knn")
    for decision in (finished, answering):
        decision.text, decision.conv_key, decision.at = "some text", "c", time.time()
    finished.outcome = "completed"
    await write_decision(conn, finished)
    async with conn.transaction():  # the row a long stream has written while still open
        await conn.execute(routing_log.INSERT_SQL, routing_log.row_of(answering, still_open=True))
    assert (await routing_stats.summary(conn)).by_outcome == {"completed": 1, "open": 1}
    assert "outcome: completed 1 (50%) · open 1 (50%)" in await core.admin.stats_text(time.time())


async def test_stats_count_the_last_day_and_all_time(core):
    conn, now = core.router.conn, time.time()
    rows = [
        (now - 3 * 86400, _decision("cheap", "casual", "knn")),
        (now - 60, _decision("strong", "coding", "llm",
                             SignalAnswer("coding", "strong", 0.9, 100.0),
                             SignalAnswer("coding", "strong", 0.8, 9.0))),
        (now - 50, _decision("medium", "analysis", "llm",
                             SignalAnswer("analysis", "medium", 0.9, 300.0),
                             SignalAnswer("casual", "cheap", 0.7, 9.0))),
        (now - 40, _decision("medium", None, "fallback", error="categorizer: timeout")),
        (now - 30, _decision("cheap", "simple_lookup", "llm",
                             SignalAnswer("simple_lookup", "cheap", 0.9, 200.0))),
    ]  # fmt: skip
    for at, decision in rows:
        decision.text, decision.conv_key, decision.at = "some text", "c", at
        decision.outcome = "provider_error" if decision.source == "fallback" else "completed"
        await write_decision(conn, decision)
    core.router.counters["log_rows_dropped"] += 2
    core.counters["markdown_fallbacks"] += 1

    day = await routing_stats.summary(conn, now - 86400)
    assert day.total == 4
    assert day.by_tier == {"medium": 2, "cheap": 1, "strong": 1}
    assert day.by_source == {"llm": 3, "fallback": 1}
    assert day.by_category["-"] == 1
    assert (day.fallbacks, day.errors) == (1, 1)
    assert (day.agreement.compared, day.agreement.same_category, day.agreement.same_tier) == (
        2,
        1,
        1,
    )
    assert (day.llm_latency.count, day.llm_latency.median_ms, day.llm_latency.p95_ms) == (
        3,
        200.0,
        300.0,
    )
    all_time = await routing_stats.summary(conn)
    assert all_time.total == 5 and all_time.by_source["knn"] == 1

    text = await core.admin.stats_text(now)
    assert text.splitlines()[:2] == [
        "crabbot routing",
        f"mode live · map v2 · pool {core.router.pool_size}",
    ]
    assert "— last 24 h: 4 decisions" in text and "— all time: 5 decisions" in text
    assert "k-NN = LLM: 50% category, 50% tier (n=2)" in text
    assert "LLM latency: median 200 ms · p95 300 ms (n=3)" in text
    assert "fallbacks 1 · errors 1\n  1 × categorizer: timeout\n" in text
    assert "outcome: completed 3 (75%) · provider_error 1 (25%)" in text
    # Degradations are shown with the failures, by reason.
    assert "since start: log rows dropped 2 · markdown fallbacks 1" in text
    assert "category: none 1 · analysis 1 · coding 1 · simple_lookup 1\n" in text


async def test_stats_of_an_empty_log_and_bad_columns(core):
    assert "— last 24 h: 0 decisions" in await core.admin.stats_text()
    with pytest.raises(ValueError):
        await routing_stats.count_by(core.router.conn, "prompt; DROP TABLE pool")


def test_percentiles():
    assert routing_stats.percentile([], 0.95) is None
    assert routing_stats.percentile([5.0], 0.95) == 5.0
    values = [float(n) for n in range(1, 101)]
    assert routing_stats.percentile(values, 0.95) == 95.0
    assert routing_stats.median(values) == 50.5
    assert routing_stats.median([1.0, 2.0, 9.0]) == 2.0


async def test_stats_count_a_fallback_that_also_failed_at_the_provider_under_each_reason(core):
    now = time.time()
    errors = [
        ("fallback", "categorizer: timeout; provider: the provider answered HTTP 502"),
        ("fallback", "categorizer: timeout"),
        ("llm", "provider: the provider answered HTTP 502"),
    ]
    for source, error in errors:
        decision = _decision("medium", None, source, error=error)
        decision.text, decision.conv_key, decision.at = "some text", "c", now - 10
        decision.outcome = "provider_error" if "provider" in error else "completed"
        await write_decision(core.router.conn, decision)
    text = await core.admin.stats_text(now)
    assert (
        "fallbacks 2 · errors 3\n"
        "  2 × categorizer: timeout\n"
        "  2 × provider: the provider answered HTTP 502\n"
    ) in text
