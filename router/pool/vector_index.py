"""A coarse (IVF) index for large pools: k-means lists, so a search scores a few thousand vectors
instead of every one; rows added after the build are scanned exactly until the next build. The
pool keeps its indexed rows in list order (`arrange`), so each probed list is one contiguous
slice and no second copy of the vectors is needed."""

from __future__ import annotations

import numpy as np

EXACT_LIMIT = 20_000  # below this, scoring every vector is faster than any index
TRAIN_SAMPLE = 20_000
KMEANS_ROUNDS = 8


class CoarseIndex:
    """Lists over the first `built_size` rows: list i is rows `order[starts[i]:starts[i+1]]`."""

    def __init__(self, centroids: np.ndarray, assignment: np.ndarray) -> None:
        self.centroids = centroids.astype(np.float32)
        self.lists = len(self.centroids)
        self.assignment = assignment.astype(np.int32)
        self.order = np.argsort(self.assignment, kind="stable").astype(np.int64)
        self.starts = np.searchsorted(self.assignment[self.order], np.arange(self.lists + 1))
        self.built_size = len(self.assignment)

    @classmethod
    def build(cls, vectors: np.ndarray, seed: int = 0) -> CoarseIndex:
        """k-means lists trained on a sample of `vectors` (rows in pool order), every row
        assigned to its nearest list."""
        rng = np.random.default_rng(seed)
        size = len(vectors)
        lists = max(16, int(2 * np.sqrt(size)))
        sample = vectors[rng.choice(size, min(size, TRAIN_SAMPLE), replace=False)]
        centroids = sample[rng.choice(len(sample), lists, replace=False)].copy()
        for _ in range(KMEANS_ROUNDS):
            assigned = np.argmax(sample @ centroids.T, axis=1)
            sums = np.zeros_like(centroids)
            np.add.at(sums, assigned, sample)
            counts = np.bincount(assigned, minlength=lists)[:, None]
            centroids = np.where(counts > 0, sums / np.maximum(counts, 1), centroids)
            centroids /= np.linalg.norm(centroids, axis=1, keepdims=True) + 1e-12
        centroids = centroids.astype(np.float32)
        return cls(centroids, _assign(vectors, centroids))

    def matches(self, vectors: np.ndarray, sample: int = 256) -> bool:
        """Whether this index was built on `vectors` in this order: a sample of rows must sit in
        the lists they are assigned to (a fit another process stored may number its rows
        otherwise, and a misaligned index would search the wrong rows)."""
        if len(vectors) < self.built_size:
            return False
        rows = np.random.default_rng(0).choice(
            self.built_size, min(sample, self.built_size), replace=False
        )
        return bool(np.array_equal(_assign(vectors[rows], self.centroids), self.assignment[rows]))

    def state(self) -> dict[str, np.ndarray]:
        """What `CoarseIndex(**state)` rebuilds it from (stored beside the fitted classifier)."""
        return {"centroids": self.centroids, "assignment": self.assignment}

    def arrange(self, vectors: np.ndarray) -> np.ndarray:
        """The indexed rows of `vectors` (pool order) in list order: the layout `score` reads."""
        return vectors[self.order]

    def score(
        self, query: np.ndarray, matrix: np.ndarray, size: int, probes: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """(rows, similarities) of the `probes` nearest lists' members and of every newer row;
        `matrix` holds the indexed rows arranged (list order), then the newer rows."""
        nearest = np.argpartition(-(self.centroids @ query), probes - 1)[:probes]
        rows = [self.order[self.starts[i] : self.starts[i + 1]] for i in nearest]
        scores = [matrix[self.starts[i] : self.starts[i + 1]] @ query for i in nearest]
        rows.append(np.arange(self.built_size, size, dtype=np.int64))
        scores.append(matrix[self.built_size : size] @ query)
        return np.concatenate(rows), np.concatenate(scores)

    def stale(self, size: int) -> bool:
        return size > self.built_size * 1.25


def _assign(vectors: np.ndarray, centroids: np.ndarray, batch: int = 8192) -> np.ndarray:
    return np.concatenate(
        [
            np.argmax(vectors[i : i + batch] @ centroids.T, axis=1)
            for i in range(0, len(vectors), batch)
        ]
    )
