"""Pool validation and taxonomy merges on the seed pool embedded with the real bundled model."""

from __future__ import annotations

import asyncio
import json
import struct
from pathlib import Path

import numpy as np
import pytest

from bot.cli import main
from router import ConfigError, Secrets, open_router
from router.analytics.calibration import decide_all
from router.analytics.pool_ops import read_pool
from router.analytics.taxonomy_ops import MergeRefused, next_version, plan_merge
from router.analytics.validation import knn_loo_probs, validate
from router.pool.pool import Neighbour
from router.pool.seed import seed_rows
from router.signals.classifier import decide, knn_vote
from router.taxonomy import MAPPING_V1, MAPPING_V2, TIERS, Taxonomy
from tests.conftest import make_config
from tests.db_helpers import open_db, sync_connect

V2 = Taxonomy("v2", MAPPING_V2)


def cli(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def split_analysis(db: Path) -> None:
    """Relabel every third analysis entry (pool and log) as research_lookup: the v1 situation,
    two labels for one kind of message."""
    with sync_connect(db) as conn:
        ids = [row[0] for row in conn.execute("SELECT id FROM pool WHERE category = 'analysis'")]
        conn.executemany(
            "UPDATE pool SET category = 'research_lookup' WHERE id = ?", [(i,) for i in ids[::3]]
        )
        for at, category in ((1.0, "research_lookup"), (2.0, "analysis"), (3.0, "casual")):
            conn.execute(
                "INSERT INTO routing_log (at, prompt_hash, prompt, mode, category, tier,"
                " tier_mapping_version, source, model, llm_category, latency_ms)"
                " VALUES (?, 'h', 'p', 'shadow', ?, ?, 'v1', 'llm', 'm', ?, 1.0)",
                (at, category, MAPPING_V1[category], category),
            )


def table_dump(db: Path) -> list:
    with sync_connect(db) as conn:
        return [
            conn.execute(f"SELECT * FROM {table} ORDER BY 1").fetchall()
            for table in ("pool", "routing_log", "settings", "taxonomy_audit")
        ]


async def load(db: Path, embedder):
    conn = await open_db(db)
    try:
        return await read_pool(conn, embedder.id, embedder.dim)
    finally:
        await conn.close()


def test_matrix_loo_is_the_routers_own_vote(seeded_db, embedder):
    pool = asyncio.run(load(seeded_db, embedder))
    index = np.array([V2.categories.index(c) for c in pool.categories])
    probs = knn_loo_probs(pool.vectors, index, len(V2.categories), k=10)
    tier_of = np.array([TIERS.index(V2.tier_of(c)) for c in V2.categories])
    categories, tiers = decide_all(probs, tier_of, 2.5)
    for i in range(0, len(pool), 97):
        sims = pool.vectors @ pool.vectors[i]
        sims[i] = -np.inf
        top = np.argsort(-sims)[:10]
        neighbours = [Neighbour(pool.texts[j], pool.categories[j], float(sims[j])) for j in top]
        answer = decide(knn_vote(neighbours, V2.categories), V2, 2.5, neighbours)
        assert (answer.category, answer.tier) == (V2.categories[categories[i]], TIERS[tiers[i]])


def test_validate_reports_both_classifiers_and_a_consistent_confusion(seeded_db, embedder):
    pool = asyncio.run(load(seeded_db, embedder))
    report = validate(pool.vectors, pool.categories, V2, texts=pool.texts, k=10,
                      downgrade_cost=2.5, threshold=0.6, folds=3)  # fmt: skip
    assert [r.name for r in report.classifiers] == ["head", "knn"]
    for result in report.classifiers:
        assert result.n == len(pool) == int(result.confusion.sum())
        assert result.category_correct == int(np.trace(result.confusion))
        assert result.n - result.tier_correct == result.upgrades + result.downgrades
        assert sum(s.n for s in result.per_category) == result.n
    # The seed pool's labels are clean: the configured head gets most tiers right.
    assert report.default.tier_accuracy > 0.85
    assert not report.default.merge_candidates
    data = report.to_json()
    assert data["tier_accuracy"] == round(report.default.tier_accuracy, 4)
    # Calibrated: stated confidence and tier accuracy agree within a few points, and the
    # threshold's share is counted from the same decisions.
    calibration = report.calibration
    assert calibration is not None and calibration.expected_calibration_error < 0.05
    assert sum(b.count for b in calibration.bins) == len(pool)
    assert 0 < calibration.alone <= len(pool)
    assert calibration.alone_tier_accuracy >= report.default.tier_accuracy
    knn_first = validate(pool.vectors, pool.categories, V2, texts=pool.texts, k=10,
                         downgrade_cost=2.5, classifier="knn", folds=3)  # fmt: skip
    assert knn_first.default.name == "knn"


def test_validate_cli_json_and_plot(seeded_db, tmp_path, capsys):
    plot = tmp_path / "confusion.png"
    code, out, _ = cli(capsys, "pool", "validate", "--db", str(seeded_db), "--json",
                       "--plot", str(plot), "--folds", "3")  # fmt: skip
    assert code == 0
    data = json.loads(out)
    assert 0.85 < data["tier_accuracy"] <= 1 and 0.8 < data["category_accuracy"] <= 1
    assert data["classifier"] == "head" and data["pool_size"] == len(seed_rows())
    assert 0 <= data["calibration"]["expected_calibration_error"] < 0.05
    assert "3-fold" in data["classifiers"][0]["method"]
    assert "leave-one-out" in data["classifiers"][1]["method"]
    assert png_size(plot) == (800, 700)
    code, out, _ = cli(capsys, "pool", "validate", "--db", str(seeded_db), "--folds", "3")
    assert code == 0 and "merge candidates: none" in out and "downgrades" in out
    assert "expected calibration error" in out and "decides" in out


def test_a_known_merge_is_named_and_its_dry_run_changes_nothing(seeded_db, tmp_path, capsys):
    split_analysis(seeded_db)
    config = tmp_path / "v1.toml"
    config.write_text('[taxonomy]\nversion = "v1"\n')
    code, out, _ = cli(capsys, "pool", "validate", "--db", str(seeded_db), "--config",
                       str(config), "--json", "--folds", "3")  # fmt: skip
    assert code == 0
    data = json.loads(out)
    merges = [(m["merge"], m["into"]) for m in data["merge_candidates"]]
    assert merges == [("research_lookup", "analysis")]
    assert data["merge_candidates"][0]["category_accuracy_gain"] > 0.03

    before = table_dump(seeded_db)
    code, out, _ = cli(capsys, "taxonomy", "merge", "research_lookup", "analysis", "--json",
                       "--db", str(seeded_db), "--config", str(config), "--folds", "3")  # fmt: skip
    assert code == 0
    assert table_dump(seeded_db) == before
    plan = json.loads(out)
    assert (plan["old_version"], plan["new_version"], plan["applied"]) == ("v1", "v2", False)
    with sync_connect(seeded_db) as conn:
        split = conn.execute("SELECT COUNT(*) FROM pool WHERE category = 'research_lookup'")
        assert plan["log_rows"] == 1 and plan["pool_rows"] == split.fetchone()[0] > 0
    old, new = plan["accuracy"]["before"], plan["accuracy"]["after"]
    assert new["head"]["category_accuracy"] > old["head"]["category_accuracy"] + 0.03
    assert new["knn"]["category_accuracy"] > old["knn"]["category_accuracy"]
    # Same tier: the k-NN vote's tiers cannot move; the head is refit, so only nearly.
    assert new["knn"]["tier_accuracy"] == old["knn"]["tier_accuracy"]
    assert abs(new["head"]["tier_accuracy"] - old["head"]["tier_accuracy"]) <= 0.03
    code, out, _ = cli(capsys, "taxonomy", "merge", "research_lookup", "analysis", "--db",
                       str(seeded_db), "--config", str(config), "--folds", "3")  # fmt: skip
    assert code == 0 and "dry run" in out and "taxonomy v1 → v2" in out
    assert table_dump(seeded_db) == before


def test_merge_apply_relabels_in_one_go_and_the_config_must_follow(
    seeded_db, tmp_path, capsys, embedder
):
    split_analysis(seeded_db)
    config = tmp_path / "v1.toml"
    config.write_text('[taxonomy]\nversion = "v1"\n')
    with sync_connect(seeded_db) as conn:
        vectors_before = conn.execute("SELECT id, embedding FROM pool ORDER BY id").fetchall()
        moved = conn.execute("SELECT COUNT(*) FROM pool WHERE category = 'research_lookup'")
        moved = moved.fetchone()[0]
    code, out, _ = cli(capsys, "taxonomy", "merge", "research_lookup", "analysis", "--db",
                       str(seeded_db), "--config", str(config), "--apply")  # fmt: skip
    assert code == 0 and 'version = "v2"' in out
    with sync_connect(seeded_db) as conn:
        assert conn.execute("SELECT embedding FROM pool ORDER BY id").fetchall() == [
            (blob,) for _, blob in vectors_before
        ]
        assert not conn.execute(
            "SELECT COUNT(*) FROM pool WHERE category = 'research_lookup'"
        ).fetchone()[0]
        assert conn.execute(
            "SELECT category, llm_category, tier, tier_mapping_version FROM routing_log"
            " WHERE at = 1.0"
        ).fetchone() == ("analysis", "analysis", "medium", "v1")
        audit = conn.execute(
            "SELECT action, from_category, to_category, log_rows, pool_rows, old_version,"
            " new_version FROM taxonomy_audit"
        ).fetchall()
        assert audit == [("merge", "research_lookup", "analysis", 1, moved, "v1", "v2")]
        stored = conn.execute("SELECT value FROM settings WHERE key = 'tier_mapping_version'")
        assert stored.fetchone() == ("v2",)

    async def start(version: str) -> None:
        cfg = make_config(seeded_db, "live", taxonomy={"version": version})
        router = await open_router(cfg, Secrets(groq_api_key=None), embedder=embedder)
        await router.close()

    with pytest.raises(ConfigError, match='remove research_lookup .* version = "v2"'):
        asyncio.run(start("v1"))
    asyncio.run(start("v2"))


def test_start_names_the_merge_when_only_the_log_has_a_category(seeded_db, embedder):
    with sync_connect(seeded_db) as conn:
        conn.execute(
            "INSERT INTO routing_log (at, prompt_hash, prompt, mode, category, tier,"
            " tier_mapping_version, source, model, latency_ms)"
            " VALUES (1, 'h', 'p', 'shadow', 'research_lookup', 'medium', 'v1', 'llm', 'm', 1)"
        )

    async def start() -> None:
        router = await open_router(make_config(seeded_db), Secrets(), embedder=embedder)
        await router.close()

    with pytest.raises(ConfigError, match="crabbot taxonomy merge research_lookup <category>"):
        asyncio.run(start())


@pytest.mark.parametrize(
    ("source", "target", "taxonomy", "reason"),
    [
        ("analysis", "analysis", V2, "into itself"),
        ("research_lookup", "nonsense", V2, "not a category of taxonomy v2"),
        ("casual", "unknown", V2, "reserved"),
        ("unknown", "casual", V2, "reserved"),
        ("nonsense", "casual", V2, "nothing to merge"),
        (
            "casual",
            "coding",
            Taxonomy("mine", {"casual": "cheap", "coding": "strong", "unknown": "medium"}),
            "tier cheap",
        ),
    ],  # fmt: skip
)
async def test_unsafe_merges_are_refused(seeded_db, source, target, taxonomy, reason):
    conn = await open_db(seeded_db)
    try:
        with pytest.raises(MergeRefused, match=reason):
            await plan_merge(conn, source, target, taxonomy)
    finally:
        await conn.close()


def test_merged_map_names():
    assert next_version("v1", dict(MAPPING_V2)) == "v2"
    assert next_version("v2", {"casual": "cheap", "unknown": "medium"}) == "v3"
    assert next_version("v1", {"casual": "cheap", "unknown": "medium"}) == "v3"
    assert next_version("home", {"casual": "cheap", "unknown": "medium"}) == "home2"
