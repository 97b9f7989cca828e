"""Cost against the baselines, shadow agreement and the stats command, checked against a
hand-computed routing log of a few rows; and the pictures are PNGs of the promised size."""

from __future__ import annotations

import asyncio
import json
import struct
import time
from pathlib import Path

import numpy as np
import pytest

from bot.cli import main
from bot.cli.stats import parse_since
from router import RoutingDecision, SignalAnswer
from router.analytics.agreement import shadow_agreement
from router.analytics.charts import confusion_png, stats_png
from router.analytics.cost import cost_report
from router.store.migrations import migrate
from router.store.routing_log import write_decision
from router.store.schema import ROUTER_MIGRATIONS
from tests.conftest import make_config
from tests.db_helpers import open_db

NOW = time.time()
MODELS = {"cheap": "nano", "medium": "mini", "strong": "big"}
PRICES = {
    "nano": {"input": 1.0, "output": 2.0},
    "mini": {"input": 10.0, "output": 20.0},
    "big": {"input": 100.0, "output": 200.0},
}
TOML = """
[models]
cheap = "nano"
medium = "mini"
strong = "big"

[prices]
nano = { input = 1.0, output = 2.0 }
mini = { input = 10.0, output = 20.0 }
big = { input = 100.0, output = 200.0 }
"""


def said(category: str, tier: str, confidence: float = 0.9) -> SignalAnswer:
    return SignalAnswer(category, tier, confidence, 10.0)


# (seconds ago, tier, model, source, llm answer, local answer, usage)
ROWS = [
    (60, "cheap", "nano", "llm", said("casual", "cheap"), said("casual", "cheap"), (1000, 500)),
    (50, "strong", "big", "llm", said("coding", "strong"), said("coding", "strong"), (200, 100)),
    (40, "medium", "mini", "llm", said("analysis", "medium"), None, None),
    (30, "cheap", "mystery", "knn", None, said("casual", "cheap"), (100, 100)),
    (20, "strong", "big", "llm", said("coding", "strong"), said("casual", "cheap", 0.3), None),
    (10, "cheap", "nano", "llm", said("casual", "cheap"), said("analysis", "medium", 0.8), None),
    (3 * 86400, "cheap", "nano", "llm", None, None, (1000, 0)),
]  # fmt: skip


def logged(
    tier: str,
    model: str,
    source: str,
    llm: SignalAnswer | None,
    knn: SignalAnswer | None,
    knn_swayed: bool = False,
) -> RoutingDecision:
    """A shadow-mode decision as the log keeps it, its category the LLM's (else the local's)."""
    return RoutingDecision(
        category=(llm or knn).category if (llm or knn) else "casual",
        tier=tier,
        model=model,
        confidence=0.9,
        source=source,
        mode="shadow",
        tier_mapping_version="v2",
        latency_ms=1.0,
        llm=llm,
        knn=knn,
        knn_swayed=knn_swayed,
    )


async def write_log(db: Path) -> None:
    conn = await open_db(db)
    await migrate(conn, "router", ROUTER_MIGRATIONS)
    for ago, tier, model, source, llm, knn, usage in ROWS:
        decision = logged(tier, model, source, llm, knn)
        decision.text, decision.conv_key, decision.at = "text", "c", NOW - ago
        decision.prompt_tokens, decision.completion_tokens = usage or (None, None)
        await write_decision(conn, decision)
    await conn.close()


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


async def test_cost_against_both_baselines_by_hand(tmp_path):
    db = tmp_path / "log.db"
    await write_log(db)
    config = make_config(db, models=MODELS, prices=PRICES)
    conn = await open_db(db)
    try:
        day = await cost_report(conn, config, NOW - 86400)
        all_time = await cost_report(conn, config)
    finally:
        await conn.close()
    # Priced rows: nano 1000/500 and big 200/100 (the mystery model has no price).
    routed = (1 * 1000 + 2 * 500) / 1e6 + (100 * 200 + 200 * 100) / 1e6  # 0.002 + 0.04
    medium = (10 * 1000 + 20 * 500) / 1e6 + (10 * 200 + 20 * 100) / 1e6  # 0.02 + 0.004
    strong = (100 * 1000 + 200 * 500) / 1e6 + (100 * 200 + 200 * 100) / 1e6  # 0.2 + 0.04
    assert (day.messages, day.priced, day.without_usage, day.unpriced) == (6, 2, 3, {"mystery": 1})
    assert (day.prompt_tokens, day.completion_tokens) == (1200, 600)
    assert day.routed == pytest.approx(routed)
    assert day.all_medium == pytest.approx(medium)
    assert day.all_strong == pytest.approx(strong)
    assert day.saving_vs_strong == pytest.approx(1 - 0.042 / 0.24)
    assert day.saving_vs_medium == pytest.approx(1 - 0.042 / 0.024)  # negative: cost more
    assert day.line() == (
        "cost: routed 0.0420 · all-medium 0.0240 (75% more) · all-strong 0.2400 (saved 82%)"
        " (n=2); 3 without usage, 1 of unpriced models"
    )
    assert all_time.priced == 3 and all_time.routed == pytest.approx(routed + 0.001)
    assert all_time.all_strong == pytest.approx(strong + 0.1)


async def test_unpriced_baseline_and_empty_log(tmp_path):
    db = tmp_path / "log.db"
    await write_log(db)
    config = make_config(db, models=MODELS, prices={"nano": PRICES["nano"]})
    conn = await open_db(db)
    try:
        report = await cost_report(conn, config)
        assert report.all_medium is None and report.saving_vs_medium is None
        assert report.priced == 2 and report.unpriced == {"big": 1, "mystery": 1}
        assert "all-medium unpriced" in report.line()
        empty = await cost_report(conn, config, NOW + 10)
        assert empty.line() == "cost: no priced usage yet"
    finally:
        await conn.close()


async def test_shadow_agreement_counts_every_rate(tmp_path):
    db = tmp_path / "log.db"
    await write_log(db)
    conn = await open_db(db)
    try:
        agreement = await shadow_agreement(conn, 0.6, 0.85, NOW - 86400)
    finally:
        await conn.close()
    overall = agreement.overall
    assert (overall.compared, overall.same_tier, overall.upgrades, overall.downgrades) == (
        4,
        2,
        1,
        1,
    )
    assert overall.same_category == 2 and overall.tier_rate == 0.5
    confident = agreement.confident  # the 0.3 downgrade would not have gone live
    assert (confident.compared, confident.same_tier, confident.upgrades) == (3, 2, 1)
    assert confident.downgrades == 0
    coding, casual = agreement.per_category["coding"], agreement.per_category["casual"]
    assert (coding.compared, coding.same_tier, coding.downgrades) == (2, 1, 1)
    assert (casual.compared, casual.same_tier, casual.upgrades) == (2, 1, 1)


async def test_a_swayed_local_answer_would_go_live_only_past_the_contexts_bar(tmp_path):
    """Live mode needs context.min_confidence where the conversation named the local answer;
    the shadow report's "would go live" counts by the same rule."""
    conn = await open_db(tmp_path / "log.db")
    await migrate(conn, "router", ROUTER_MIGRATIONS)
    for swayed in (False, True):
        llm, knn = said("coding", "strong"), said("coding", "strong", 0.8)
        decision = logged("strong", "big", "llm", llm, knn, knn_swayed=swayed)
        decision.text, decision.at = "why?", NOW
        await write_decision(conn, decision)
    try:
        strict = await shadow_agreement(conn, 0.7, 0.85)
        lenient = await shadow_agreement(conn, 0.7, 0.75)
    finally:
        await conn.close()
    assert strict.overall.compared == lenient.overall.compared == 2
    assert strict.confident.compared == 1 and lenient.confident.compared == 2


def test_stats_command_json_text_and_plot(tmp_path, capsys):
    db = tmp_path / "log.db"
    asyncio.run(write_log(db))
    config = tmp_path / "crabbot.toml"
    config.write_text(TOML)
    plot = tmp_path / "stats.png"
    args = ["stats", "--db", str(db), "--config", str(config), "--since", "24h"]
    assert main([*args, "--json", "--plot", str(plot)]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["summary"]["total"] == 6
    assert data["cost"]["routed"] == pytest.approx(0.042) and data["cost"]["priced"] == 2
    assert data["shadow_agreement"]["overall"]["compared"] == 4
    assert png_size(plot.read_bytes()) == (1000, 800)
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "— last 24h: 6 decisions" in out and "(saved 82%)" in out
    assert "shadow agreement" in out and "would go live" in out
    assert main([*args[:-1], "all"]) == 0 and "all time: 7 decisions" in capsys.readouterr().out
    assert main([*args[:-1], "yesterday"]) == 2


def test_since_windows():
    assert parse_since("all", 1000.0) is None
    assert parse_since("24h", 100000.0) == 100000.0 - 86400
    assert parse_since("7d", 1e6) == 1e6 - 7 * 86400
    assert parse_since("2w", 2e6) == 2e6 - 14 * 86400
    for bad in ("", "0d", "7", "d7", "7y"):
        with pytest.raises(ValueError):
            parse_since(bad, 0.0)


def test_pictures_are_pngs_of_the_promised_size():
    labels = ["casual", "coding", "unknown"]
    matrix = np.array([[5, 1, 0], [0, 7, 0], [0, 0, 0]])
    assert png_size(confusion_png(labels, matrix, "test")) == (800, 700)
    one_day = stats_png(["11-22"], {"cheap": [3]}, {"llm": [3]}, {"routed": [0.1]})
    assert png_size(one_day) == (1000, 800)
    days = [f"11-{d:02d}" for d in range(1, 31)]
    month = stats_png(
        days,
        {"cheap": list(range(30)), "strong": [1] * 30},
        {"llm": [2] * 30, "knn": [0] * 30},
        {"routed": [0.1] * 30, "all medium": [0.2] * 30, "all strong": [1.0] * 30},
    )
    assert png_size(month) == (1000, 800)


def test_stats_survive_rows_whose_time_is_no_date(tmp_path, capsys):
    """Issue 24, 12: a row stored at Inf or in milliseconds must not break the plot for good."""
    db = tmp_path / "log.db"
    asyncio.run(write_log(db))

    async def bad_rows() -> None:
        conn = await open_db(db)
        await conn.execute("UPDATE routing_log SET at = ? WHERE id = 1", (float("inf"),))
        await conn.execute("UPDATE routing_log SET at = ? WHERE id = 2", (1796419000000.0,))
        await conn.close()

    asyncio.run(bad_rows())
    config = tmp_path / "crabbot.toml"
    config.write_text(TOML)
    plot = tmp_path / "stats.png"
    assert main(["stats", "--db", str(db), "--config", str(config), "--since", "all"]) == 0
    args = ["stats", "--db", str(db), "--config", str(config), "--since", "all"]
    assert main([*args, "--plot", str(plot)]) == 0
    assert png_size(plot.read_bytes()) == (1000, 800)
    capsys.readouterr()
