"""A coarse (IVF) index for large pools: k-means lists, so a search scores a few thousand vectors
instead of every one; rows added after the build are scanned exactly until the next build."""

from __future__ import annotations

import numpy as np

EXACT_LIMIT = 20_000  # below this, scoring every vector is faster than any index
TRAIN_SAMPLE = 20_000
KMEANS_ROUNDS = 8


class CoarseIndex:
    def __init__(self, vectors: np.ndarray, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        size = len(vectors)
        self.lists = max(16, int(2 * np.sqrt(size)))
        sample = vectors[rng.choice(size, min(size, TRAIN_SAMPLE), replace=False)]
        centroids = sample[rng.choice(len(sample), self.lists, replace=False)].copy()
        for _ in range(KMEANS_ROUNDS):
            assigned = np.argmax(sample @ centroids.T, axis=1)
            sums = np.zeros_like(centroids)
            np.add.at(sums, assigned, sample)
            counts = np.bincount(assigned, minlength=self.lists)[:, None]
            centroids = np.where(counts > 0, sums / np.maximum(counts, 1), centroids)
            centroids /= np.linalg.norm(centroids, axis=1, keepdims=True) + 1e-12
        self.centroids = centroids.astype(np.float32)
        assignment = self._assign(vectors)
        self.order = np.argsort(assignment, kind="stable").astype(np.int64)
        self.starts = np.searchsorted(assignment[self.order], np.arange(self.lists + 1))
        # A copy in list order, so each probed list is one contiguous slice (no scattered reads).
        self.sorted_vectors = np.ascontiguousarray(vectors[self.order])
        self.built_size = size

    def _assign(self, vectors: np.ndarray, batch: int = 8192) -> np.ndarray:
        return np.concatenate(
            [
                np.argmax(vectors[i : i + batch] @ self.centroids.T, axis=1)
                for i in range(0, len(vectors), batch)
            ]
        )

    def score(
        self, query: np.ndarray, matrix: np.ndarray, size: int, probes: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """(rows, similarities) of the `probes` nearest lists' members and of every newer row."""
        nearest = np.argpartition(-(self.centroids @ query), probes - 1)[:probes]
        rows = [self.order[self.starts[i] : self.starts[i + 1]] for i in nearest]
        scores = [self.sorted_vectors[self.starts[i] : self.starts[i + 1]] @ query for i in nearest]
        rows.append(np.arange(self.built_size, size, dtype=np.int64))
        scores.append(matrix[self.built_size : size] @ query)
        return np.concatenate(rows), np.concatenate(scores)

    def stale(self, size: int) -> bool:
        return size > self.built_size * 1.25
