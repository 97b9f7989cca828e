"""A second view of a message beside its embedding: hashed character n-grams (and words) scored
by naive Bayes, cheap and strong on the short CJK forms an embedding blurs."""

from __future__ import annotations

import re
import zlib

import numpy as np

from router.text import normalize_text

BUCKETS = 1 << 18
_WORDS = re.compile(r"\w+")


def ngram_buckets(text: str) -> np.ndarray:
    """Hashed character 1-3 grams of the normalized text, plus its words."""
    padded = f" {normalize_text(text)} "
    grams = [
        padded[i : i + n]
        for n in (1, 2, 3)
        for i in range(len(padded) - n + 1)
        if padded[i : i + n].strip()
    ]
    grams += [f"w:{word}" for word in _WORDS.findall(padded)]
    if not grams:
        return np.zeros(1, dtype=np.int64)
    return np.fromiter((zlib.crc32(g.encode()) % BUCKETS for g in grams), np.int64, len(grams))


class NgramNaiveBayes:
    """Multinomial naive Bayes over hashed n-grams with a uniform class prior (the pool is not a
    sample of real traffic); scores are length-normalized log-likelihoods, one per class."""

    def __init__(self, classes: int, alpha: float = 0.1) -> None:
        self.classes = classes
        self.alpha = alpha
        self._log_probs: np.ndarray | None = None
        # The fitted counts, sparse: (flat index class * BUCKETS + bucket, count) of the nonzero.
        self._index = np.zeros(0, dtype=np.int32)
        self._count = np.zeros(0, dtype=np.float32)

    @property
    def ready(self) -> bool:
        return self._log_probs is not None

    @property
    def log_probs(self) -> np.ndarray:
        """log p(bucket | class), one row a class."""
        assert self._log_probs is not None
        return self._log_probs

    def fit(self, texts: list[str], labels: np.ndarray) -> NgramNaiveBayes:
        return self.fit_buckets([ngram_buckets(text) for text in texts], labels)

    def fit_buckets(self, buckets: list[np.ndarray], labels: np.ndarray) -> NgramNaiveBayes:
        """Fit on texts already hashed (cross-validation hashes each text once, not per fold)."""
        flat = np.concatenate(buckets) if buckets else np.zeros(0, np.int64)
        rows = np.repeat(np.asarray(labels, np.int64), [len(b) for b in buckets])
        counts = np.bincount(rows * BUCKETS + flat, minlength=self.classes * BUCKETS)
        index = np.flatnonzero(counts)
        return self._set_counts(index, counts[index].astype(np.float32))

    def _set_counts(self, index: np.ndarray, count: np.ndarray) -> NgramNaiveBayes:
        """log p(bucket | class) with add-alpha smoothing, computed from the nonzero counts alone:
        every empty bucket of a class shares one value (a start loads this, so no pass of log
        over all classes * BUCKETS cells)."""
        self._index, self._count = index.astype(np.int32), count.astype(np.float32)
        row_of = self._index // BUCKETS
        totals = np.bincount(row_of, weights=self._count, minlength=self.classes)
        log_totals = np.log(totals.astype(np.float32) + self.alpha * BUCKETS)
        log_probs = np.empty((self.classes, BUCKETS), dtype=np.float32)
        log_probs[:] = (np.log(np.float32(self.alpha)) - log_totals)[:, None]
        log_probs.reshape(-1)[self._index] = np.log(self._count + self.alpha) - log_totals[row_of]
        self._log_probs = log_probs
        return self

    def state(self) -> dict[str, np.ndarray]:
        """The fitted counts, sparse (most buckets are empty): what `from_state` needs."""
        return {"ngram_index": self._index, "ngram_count": self._count}

    def load_state(self, state: dict[str, np.ndarray]) -> NgramNaiveBayes:
        return self._set_counts(state["ngram_index"], state["ngram_count"])

    def scores(self, text: str) -> np.ndarray:
        return self.scores_buckets(ngram_buckets(text))

    def scores_buckets(self, buckets: np.ndarray) -> np.ndarray:
        assert self._log_probs is not None
        return self._log_probs[:, buckets].sum(axis=1) / np.sqrt(len(buckets))
