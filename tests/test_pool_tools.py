"""Moving and tidying the pool: import between two databases, the embedder compatibility check,
near-duplicate removal; on the real bundled model."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import numpy as np

from bot.cli import main
from router.analytics.pool_ops import plan_dedupe, read_pool
from router.store.migrations import migrate
from router.store.schema import ROUTER_MIGRATIONS
from router.store.sqlite import SqliteDatabase
from router.text import text_hash
from tests.db_helpers import open_db, sync_connect

FOREIGN = "sentence-transformers:some-other-model:none"
NEW_TEXTS = [
    "我們家的貓今天第一次自己開門了",
    "明日の遠足、お弁当は何がいいかな",
    "Who took my charger",
]
FOREIGN_TEXTS = [
    "請幫我寫一首給外婆的生日詩",
    "write a bash one-liner to count lines in all .py files",
]


def cli(capsys, *args: str) -> tuple[int, str]:
    code = main(list(args))
    return code, capsys.readouterr().out


def pool_rows(db: Path, embedder_id: str | None = None) -> list[tuple]:
    with sync_connect(db) as conn:
        sql = "SELECT text, category, embedder_id, embedding FROM pool"
        if embedder_id:
            return conn.execute(
                sql + " WHERE embedder_id = ? ORDER BY id", (embedder_id,)
            ).fetchall()
        return conn.execute(sql + " ORDER BY id").fetchall()


def make_other(path: Path, seeded_db: Path, embedder) -> None:
    """Another crabbot database: three entries ours already has (one spelled differently), three
    new ones of our embedder, two of a foreign embedder, one of a category we lack."""

    async def build() -> None:
        conn = await SqliteDatabase.open(path)  # another crabbot's file, whatever ours is
        await migrate(conn, "router", ROUTER_MIGRATIONS)
        await conn.close()

    asyncio.run(build())
    ours = pool_rows(seeded_db)[:3]
    rows = [(f"  {text.upper()} " if i == 0 else text, category, embedder_id, blob)
            for i, (text, category, embedder_id, blob) in enumerate(ours)]  # fmt: skip
    vectors = embedder.embed(NEW_TEXTS)
    rows += [
        (t, "casual", embedder.id, v.tobytes()) for t, v in zip(NEW_TEXTS, vectors, strict=True)
    ]
    rng = np.random.default_rng(0)
    for text, category in zip(FOREIGN_TEXTS, ("creative", "coding"), strict=True):
        rows.append(
            (text, category, FOREIGN, rng.standard_normal(768).astype(np.float32).tobytes())
        )
    rows.append(("what is a research lookup", "research_lookup", embedder.id, vectors[0].tobytes()))
    with sqlite3.connect(path) as conn:
        conn.executemany(
            "INSERT INTO pool (prompt_hash, text, embedding, embedder_id, category, label_source,"
            " confidence, added_at) VALUES (?, ?, ?, ?, ?, 'llm', 0.9, 1.0)",
            [(text_hash(t), t, blob, eid, c) for t, c, eid, blob in rows],
        )


def test_import_skips_duplicates_refuses_foreign_vectors_and_reembeds_on_request(
    seeded_db, tmp_path, capsys, embedder
):
    other = tmp_path / "other.db"
    make_other(other, seeded_db, embedder)
    size = len(pool_rows(seeded_db))

    code, out = cli(capsys, "pool", "import", str(other), "--db", str(seeded_db))
    assert code == 0 and "dry run" in out
    assert len(pool_rows(seeded_db)) == size
    for label, count in (("read", 9), ("new", 3), ("duplicate", 3), ("refused", 3)):
        assert any(line.split("│")[1].strip().startswith(label) and
                   line.split("│")[2].strip() == str(count)
                   for line in out.splitlines() if line.count("│") == 3), (label, out)  # fmt: skip
    assert f"embedder {FOREIGN}" in out and "'research_lookup' not in taxonomy v2" in out

    code, out = cli(capsys, "pool", "import", str(other), "--db", str(seeded_db), "--apply")
    assert code == 0 and "imported 3 entries" in out
    assert len(pool_rows(seeded_db)) == size + 3

    code, out = cli(capsys, "pool", "import", str(other), "--db", str(seeded_db), "--reembed",
                    "--apply")  # fmt: skip
    assert code == 0 and "imported 2 entries" in out
    stored = {text: blob for text, _, _, blob in pool_rows(seeded_db, embedder.id)}
    assert set(NEW_TEXTS + FOREIGN_TEXTS) <= set(stored)
    assert all(eid == embedder.id for _, _, eid, _ in pool_rows(seeded_db))
    again = embedder.embed(FOREIGN_TEXTS)
    for text, vector in zip(FOREIGN_TEXTS, again, strict=True):
        assert np.allclose(np.frombuffer(stored[text], np.float32), vector, atol=1e-5)


def test_check_compat_passes_on_the_same_embedder_and_fails_on_another(
    seeded_db, tmp_path, capsys, embedder
):
    code, out = cli(capsys, "pool", "check-compat", str(seeded_db), "--db",
                    str(tmp_path / "mine.db"), "--sample", "12")  # fmt: skip
    assert code == 0 and "PASS" in out

    # The same texts, but vectors of "another model": ours, nudged off by a little noise.
    shifted = tmp_path / "shifted.db"
    with sqlite3.connect(seeded_db) as source, sqlite3.connect(shifted) as target:
        source.backup(target)
        rng = np.random.default_rng(1)
        rows = target.execute("SELECT id, embedding FROM pool").fetchall()
        updates = []
        for row_id, blob in rows:
            vector = np.frombuffer(blob, np.float32) + rng.normal(0, 0.01, embedder.dim)
            updates.append(((vector / np.linalg.norm(vector)).astype(np.float32).tobytes(), row_id))
        target.executemany("UPDATE pool SET embedding = ? WHERE id = ?", updates)
    code, out = cli(capsys, "pool", "check-compat", str(shifted), "--db",
                    str(tmp_path / "mine.db"), "--sample", "12")  # fmt: skip
    assert code == 1 and "FAIL" in out and "--reembed" in out


def test_check_compat_fails_on_other_dimensions(seeded_db, tmp_path, capsys, embedder):
    other = tmp_path / "other.db"
    make_other(other, seeded_db, embedder)
    code, out = cli(capsys, "pool", "check-compat", str(other), "--embedder-id", FOREIGN,
                    "--db", str(tmp_path / "mine.db"))  # fmt: skip
    assert code == 1 and "768 dimensions" in out


def test_dedupe_keeps_one_per_cluster_and_only_with_apply(seeded_db, capsys, embedder):
    with sync_connect(seeded_db) as conn:
        (first_id, text, blob), (_, _, second) = conn.execute(
            "SELECT id, text, embedding FROM pool ORDER BY id LIMIT 2"
        ).fetchall()
        near = np.frombuffer(blob, np.float32) + 0.001 * np.frombuffer(second, np.float32)
        near = (near / np.linalg.norm(near)).astype(np.float32)
        for suffix, category, vector in (("!", "casual", near), ("?", "coding", near)):
            conn.execute(
                "INSERT INTO pool (prompt_hash, text, embedding, embedder_id, category,"
                " label_source, added_at) VALUES (?, ?, ?, ?, ?, 'llm', 2.0)",
                (text_hash(text + suffix), text + suffix, vector.tobytes(), embedder.id, category),
            )
    before = len(pool_rows(seeded_db))

    async def plan():
        conn = await open_db(seeded_db)
        try:
            return plan_dedupe(await read_pool(conn, embedder.id, embedder.dim), 0.999)
        finally:
            await conn.close()

    result = asyncio.run(plan())
    cluster = next(c for c in result.clusters if result.pool.ids[c.keep] == first_id)
    assert [result.pool.texts[i] for i, _ in cluster.removed] == [text + "!", text + "?"]
    assert all(similarity >= 0.999 for _, similarity in cluster.removed)
    assert cluster in result.label_conflicts()  # the kept one is casual, one removed coding

    code, out = cli(capsys, "pool", "dedupe", "--db", str(seeded_db), "--threshold", "0.999")
    assert code == 0 and "dry run" in out and f"{result.removed} entries to remove" in out
    assert len(pool_rows(seeded_db)) == before
    code, out = cli(capsys, "pool", "dedupe", "--db", str(seeded_db), "--threshold", "0.999",
                    "--apply")  # fmt: skip
    assert code == 0 and f"removed {result.removed} entries" in out
    texts = [row[0] for row in pool_rows(seeded_db)]
    assert len(texts) == before - result.removed
    assert text in texts and text + "!" not in texts and text + "?" not in texts
