"""The coarse index a large pool searches with: it finds what exact search finds, including rows
added after it was built."""

from __future__ import annotations

import numpy as np

from router.pool.vector_index import CoarseIndex
from router.text import text_hash


def unit(rows: np.ndarray) -> np.ndarray:
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


def test_coarse_search_matches_exact_search():
    rng = np.random.default_rng(3)
    centres = unit(rng.normal(size=(300, 384)))
    matrix = unit(centres[rng.integers(0, 300, 25_000)] + rng.normal(0, 0.03, (25_000, 384)))
    index = CoarseIndex.build(matrix[:24_000])
    assert not index.stale(25_000) and index.stale(31_000)
    arranged = np.concatenate([index.arrange(matrix[:24_000]), matrix[24_000:]])
    found = 0
    for row in rng.integers(0, 25_000, 50):
        query = unit(matrix[row : row + 1] + rng.normal(0, 0.01, (1, 384)))[0]
        rows, scores = index.score(query, arranged, 25_000, probes=16)
        assert np.allclose(scores, matrix[rows] @ query, atol=1e-5)
        best = set(rows[np.argsort(-scores)[:10]].tolist())
        exact = set(np.argsort(-(matrix @ query))[:10].tolist())
        found += len(best & exact)
        assert row in best, "a row's own near-copy is always found, built or added later"
    assert found / 500 >= 0.95


async def test_an_indexed_pool_finds_what_exact_search_finds_and_keeps_its_order():
    from router.pool.pool import Pool, PoolEntry

    rng = np.random.default_rng(5)
    centres = unit(rng.normal(size=(60, 32)))
    matrix = unit(centres[rng.integers(0, 60, 4_000)] + rng.normal(0, 0.05, (4_000, 32)))
    pool = Pool(None, "fake", 32)  # type: ignore[arg-type]  # add_behind needs no database
    entries = [PoolEntry(f"text {i}", f"c{i % 3}", row, "seed") for i, row in enumerate(matrix)]
    await pool.add_behind(entries[:3_000], lambda job: None)
    snapshot = pool.snapshot()
    assert pool.adopt_index(CoarseIndex.build(snapshot.vectors), snapshot.generation)
    await pool.add_behind(entries[3_000:], lambda job: None)  # after the build: scanned exactly
    assert np.array_equal(pool.vectors, matrix) and pool.snapshot().texts[-1] == "text 3999"
    found = 0
    for row in rng.integers(0, 4_000, 40):
        got = [n.text for n in pool.search(matrix[row], 10)]
        exact = [f"text {i}" for i in np.argsort(-(matrix @ matrix[row]))[:10]]
        assert got[0] == f"text {row}"
        found += len(set(got) & set(exact))
    assert found / 400 >= 0.9
    # A snapshot taken before a drop names other rows: its index is refused.
    stale = pool.snapshot()
    assert await pool.drop({text_hash("text 0")}) == 1
    assert not pool.adopt_index(CoarseIndex.build(stale.vectors), stale.generation)
    assert np.array_equal(pool.vectors, matrix[1:])
