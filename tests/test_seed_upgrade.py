"""A new release's seed entries reach a database an older release seeded: added at the next
start (and by the pool commands), never over what the family did to its pool (a removed entry
stays removed, a relabelled one keeps the family's label), once, however many processes start
at once. Each release is a small seed file written here; the real bundled model embeds it."""

from __future__ import annotations

import asyncio
import functools
import json
import logging
from dataclasses import astuple
from pathlib import Path

import numpy as np
import pytest

from bot.cli import main
from router import ModelRouter, RoutingDecision, Secrets, open_router
from router.embedding.embedder import Embedder
from router.pool import seed
from router.pool.pool import Pool, PoolEntry
from router.store.migrations import Migrations, migrate
from router.store.schema import ROUTER_MIGRATIONS
from router.text import text_hash
from tests.conftest import make_config
from tests.db_helpers import fetch, open_db, write

# A message of the kind the newer release adds (maths word problems, `reasoning`).
WORD_PROBLEM = (
    "Tom is twice as old as Ann. In 5 years the sum of their ages will be 40."
    " How old is Ann now? Show the steps."
)
ADDED = "this release's seed pool added"


@functools.cache
def real_rows() -> tuple[dict[str, str], ...]:
    """This release's seed file (read here, not through the seam the tests point elsewhere)."""
    path = Path(seed.__file__).resolve().parent.parent / "data" / seed.SEED_FILE
    return tuple(json.loads(line) for line in path.read_text(encoding="utf-8").splitlines())


def shipped(category: str, count: int) -> tuple[dict[str, str], ...]:
    """The first `count` English rows of a category in the real seed file."""
    rows = [r for r in real_rows() if r["category"] == category and r["lang"] == "en"]
    return tuple(rows[:count])


def older_rows() -> list[dict[str, str]]:
    return [
        row
        for category in ("casual", "coding", "creative", "simple_lookup")
        for row in shipped(category, 10)
    ]


def newer_rows() -> list[dict[str, str]]:
    return older_rows() + list(shipped("reasoning", 12))


def release(folder: Path, rows: list[dict[str, str]], monkeypatch: pytest.MonkeyPatch) -> None:
    """From now on crabbot ships these seed rows (no shipped vectors: they are embedded)."""
    folder.mkdir(exist_ok=True)
    lines = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    (folder / seed.SEED_FILE).write_text(lines, encoding="utf-8")
    monkeypatch.setattr(seed, "DATA", folder)


async def start(db: Path, embedder: Embedder) -> ModelRouter:
    return await open_router(make_config(db, "live"), Secrets(groq_api_key=None), embedder=embedder)


async def start_and_route(
    db: Path, embedder: Embedder, text: str
) -> tuple[ModelRouter, RoutingDecision]:
    """A start, one message routed, a stop: the router (closed) and its decision."""
    router = await start(db, embedder)
    try:
        return router, await router.route(text)
    finally:
        await router.close()


async def pool_rows(db: Path) -> dict[str, tuple[str, str]]:
    """text -> (category, label_source) of the stored pool."""
    rows = await fetch(db, "SELECT text, category, label_source FROM pool")
    return {text: (category, source) for text, category, source in rows}


async def test_an_upgrade_brings_the_new_seed_entries_and_keeps_the_familys_changes(
    tmp_path, embedder, monkeypatch, caplog
):
    caplog.set_level(logging.INFO, logger="router.pool.seed")
    db = tmp_path / "family.db"
    old, new = older_rows(), newer_rows()
    release(tmp_path / "old", old, monkeypatch)
    router, before = await start_and_route(db, embedder, WORD_PROBLEM)
    assert router.pool_size == len(old)
    assert before.category != "reasoning"  # nothing in this pool reads as reasoning yet
    # What the family did with its pool: one entry removed (as `crabbot pool dedupe --apply`
    # does), one relabelled.
    removed, relabelled = old[1]["text"], old[2]["text"]
    assert await write(db, "DELETE FROM pool WHERE prompt_hash = ?", (text_hash(removed),)) == 1
    await write(
        db, "UPDATE pool SET category = 'coding' WHERE prompt_hash = ?", (text_hash(relabelled),)
    )
    caplog.clear()

    release(tmp_path / "new", new, monkeypatch)
    router, after = await start_and_route(db, embedder, WORD_PROBLEM)
    stored = await pool_rows(db)
    assert router.pool_size == len(stored) == len(new) - 1
    assert {row["text"] for row in shipped("reasoning", 12)} <= set(stored)
    assert all(stored[row["text"]] == ("reasoning", "seed") for row in shipped("reasoning", 12))
    assert removed not in stored
    assert stored[relabelled] == ("coding", "seed")
    assert after.category == "reasoning" and after.source == "knn"
    assert f"{ADDED} 12 new entries" in caplog.text

    caplog.clear()
    router = await start(db, embedder)
    await router.close()
    assert router.pool_size == len(new) - 1
    assert await pool_rows(db) == stored
    assert ADDED not in caplog.text and "seeded the pool" not in caplog.text


async def test_a_release_that_relabels_a_seed_entry_leaves_the_pools_label(
    tmp_path, embedder, monkeypatch
):
    db = tmp_path / "family.db"
    old = older_rows()
    release(tmp_path / "old", old, monkeypatch)
    await (await start(db, embedder)).close()
    moved = old[0]["text"]
    relabelled = [{**row, "category": "creative"} if row["text"] == moved else row for row in old]
    release(tmp_path / "new", relabelled + list(shipped("reasoning", 3)), monkeypatch)
    await (await start(db, embedder)).close()
    stored = await pool_rows(db)
    assert stored[moved] == (old[0]["category"], "seed") and len(stored) == len(old) + 3


async def test_a_database_from_before_the_record_starts_it_from_its_seed_rows(
    tmp_path, embedder, monkeypatch
):
    """Migrated from the schema before `seed_given`: the seed rows it holds count as given; one
    it had removed before the upgrade comes back once (docs/operations.md says so), and a
    text the family taught under another label is left alone."""
    db = tmp_path / "family.db"
    old = older_rows()
    before_record = Migrations(
        sqlite=ROUTER_MIGRATIONS.sqlite[:-1], postgresql=ROUTER_MIGRATIONS.postgresql[:-1]
    )
    taught = shipped("reasoning", 12)[0]["text"]  # the family's own label came first
    conn = await open_db(db)
    try:
        await migrate(conn, "router", before_record)
        kept = old[2:]  # old[0] and old[1] removed before the upgrade
        vectors = embedder.embed([row["text"] for row in kept] + [taught])
        pool = Pool(conn, embedder.id, embedder.dim)
        await pool.add_many(
            [
                PoolEntry(r["text"], r["category"], v, "seed")
                for r, v in zip(kept, vectors[:-1], strict=True)
            ]
            + [PoolEntry(taught, "analysis", vectors[-1], "llm", 0.9)]
        )
    finally:
        await conn.close()

    release(tmp_path / "new", newer_rows(), monkeypatch)
    await (await start(db, embedder)).close()
    stored = await pool_rows(db)
    assert len(stored) == len(newer_rows())
    assert old[0]["text"] in stored and old[1]["text"] in stored  # back, this once
    assert stored[taught] == ("analysis", "llm")
    given = await fetch(
        db, "SELECT text_hash FROM seed_given WHERE embedder_id = ?", (embedder.id,)
    )
    assert {h for (h,) in given} == {text_hash(row["text"]) for row in newer_rows()}

    await write(db, "DELETE FROM pool WHERE prompt_hash = ?", (text_hash(old[0]["text"]),))
    await (await start(db, embedder)).close()
    assert old[0]["text"] not in await pool_rows(db)


async def test_the_pool_commands_bring_the_new_entries_as_a_start_does(
    tmp_path, embedder, monkeypatch, capsys
):
    db = tmp_path / "family.db"
    release(tmp_path / "old", older_rows(), monkeypatch)
    await (await start(db, embedder)).close()
    release(tmp_path / "new", newer_rows(), monkeypatch)
    assert await asyncio.to_thread(main, ["pool", "dedupe", "--db", str(db)]) == 0
    assert "dry run" in capsys.readouterr().out
    assert set(await pool_rows(db)) == {row["text"] for row in newer_rows()}


async def test_processes_starting_at_once_add_the_new_entries_once(tmp_path, embedder, monkeypatch):
    db = tmp_path / "family.db"
    release(tmp_path / "old", older_rows(), monkeypatch)
    await (await start(db, embedder)).close()
    release(tmp_path / "new", newer_rows(), monkeypatch)
    routers = await asyncio.gather(*(start(db, embedder) for _ in range(3)))
    for router in routers:
        await router.close()
    assert [router.pool_size for router in routers] == [len(newer_rows())] * 3
    rows = await fetch(db, "SELECT prompt_hash FROM pool")
    assert len(rows) == len({h for (h,) in rows}) == len(newer_rows())
    given = await fetch(db, "SELECT COUNT(*) FROM seed_given")
    assert given == [(len(newer_rows()),)]


async def test_an_earlier_releases_calibration_is_not_applied_to_this_releases_classifier(
    tmp_path, embedder, monkeypatch
):
    """The stored calibration scales one classifier's scores: an upgrade whose classifier fits
    another kind of head calibrates again instead of reading the new scores with old scales."""
    db = tmp_path / "family.db"
    release(tmp_path / "old", older_rows(), monkeypatch)
    await (await start(db, embedder)).close()
    stale = {"embedder_id": embedder.id, "pool_size": 40, "head_scale": 2.47, "ngram_scale": 1.5}
    await write(
        db, "UPDATE settings SET value = ? WHERE key = 'local_calibration'", (json.dumps(stale),)
    )
    router = await start(db, embedder)
    try:
        assert router.local is not None
        assert router.local.classifier.calibration.head_scale != 2.47
    finally:
        await router.close()
    (stored,) = await fetch(db, "SELECT value FROM settings WHERE key = 'local_calibration'")
    assert json.loads(stored[0])["head_scale"] != 2.47


async def test_an_upgraded_pool_of_about_the_seed_pools_size_reads_as_a_new_install_does(
    seeded_db, embedder
):
    """An earlier release's calibration is refused; a pool about the shipped one's size then
    takes the calibration shipped with it (chosen by held-out writer), not one its start would
    make from random folds: a message gets the confidence a new install gives it."""
    text = "可以幫我把這段 email 改得客氣一點嗎 要寄給房東"
    new_install, first = await start_and_route(seeded_db, embedder, text)
    assert new_install.local is not None
    size = new_install.pool_size
    earlier = {
        "embedder_id": embedder.id,
        "state_version": "2",
        "pool_size": size,
        "head_scale": 0.7,
        "ngram_scale": 0.6,
        "far_slope": 2.0,
        "far_pivot": 0.9,
    }
    await write(
        seeded_db,
        "UPDATE settings SET value = ? WHERE key = 'local_calibration'",
        (json.dumps(earlier),),
    )
    upgraded, second = await start_and_route(seeded_db, embedder, text)
    assert upgraded.local is not None
    vectors = Path(seed.__file__).resolve().parent.parent / "data" / seed.VECTORS_FILE
    with np.load(vectors) as data:
        shipped_scales = tuple(float(x) for x in data["calibration"])
    assert astuple(upgraded.local.classifier.calibration) == shipped_scales
    assert (second.category, second.confidence) == (first.category, first.confidence)
    (stored,) = await fetch(seeded_db, "SELECT value FROM settings WHERE key = 'local_calibration'")
    assert json.loads(stored[0])["state_version"] != "2"


async def loaded_pool(db_path: Path, embedder: Embedder) -> Pool:
    db = await open_db(db_path)
    pool = Pool(db, embedder.id, embedder.dim)
    await pool.load()
    await db.close()
    return pool


async def test_the_shipped_calibration_serves_only_a_pool_that_holds_the_shipped_vectors(
    seeded_db, embedder
):
    assert seed.shipped_calibration(await loaded_pool(seeded_db, embedder)) is not None
    # A pool embedded apart (the spot check of the shipped vectors failed, or another model
    # under the same name): its vector of the first seed text is not the shipped one.
    other = np.random.default_rng(0).standard_normal(embedder.dim).astype(np.float32)
    other /= np.linalg.norm(other)
    first = seed.seed_rows()[0]["text"]
    changed = await write(
        seeded_db,
        "UPDATE pool SET embedding = ? WHERE prompt_hash = ?",
        (other.tobytes(), text_hash(first)),
    )
    assert changed == 1
    assert seed.shipped_calibration(await loaded_pool(seeded_db, embedder)) is None


async def test_a_pool_much_smaller_than_the_seed_pool_calibrates_on_its_own(seeded_db, embedder):
    ids = [row_id for (row_id,) in await fetch(seeded_db, "SELECT id FROM pool ORDER BY id")]
    # A tenth removed, from the second seed entry on (the spot-checked ones stay: the first,
    # then every fifth of the way).
    removed = await write(
        seeded_db, "DELETE FROM pool WHERE id > ? AND id <= ?", (ids[0], ids[len(ids) // 10])
    )
    assert removed == len(ids) // 10
    assert seed.shipped_calibration(await loaded_pool(seeded_db, embedder)) is None
