"""The coarse index a large pool searches with: it finds what exact search finds, including rows
added after it was built."""

from __future__ import annotations

import numpy as np

from router.pool.vector_index import CoarseIndex


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
