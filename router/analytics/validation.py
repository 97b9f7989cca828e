"""Cross-validation of the local signal over the pool: category and tier accuracy, the confusion
matrix, upgrades and downgrades, and the same-tier category pairs worth merging."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from router.analytics.calibration import Calibrated, calibrated, decide_all
from router.embedding.blas import one_blas_thread
from router.signals.calibration import fit_calibration
from router.signals.classifier import KNN_TEMPERATURE, LocalClassifier
from router.taxonomy import TIERS, UNKNOWN, Taxonomy

# (stage, done, total): drives a progress bar without this module knowing about one.
Progress = Callable[[str, int, int], None]

HEAD_FOLDS = 10
BLOCK_ROWS = 512  # rows of the similarity matrix computed at once (512 x 10k floats = 20 MB)
# A same-tier pair is a merge candidate when at least this share of its messages are taken for
# the other category, and the two take each other for at least half of their category errors.
MIN_PAIR_CONFUSION = 0.25
MIN_ERROR_SHARE = 0.5
METHODS = {  # {folds}: the head's folds
    "head": (
        "{folds}-fold cross-validation of the embedding head and the n-gram view, calibrated"
        " on those out-of-fold scores (two weights)"
    ),
    "knn": "leave-one-out (one similarity matrix, each entry's own row masked)",
    "blend": "mean of the head ({folds}-fold) and the k-NN vote (leave-one-out)",
}


@dataclass(frozen=True)
class CategoryScore:
    category: str
    tier: str
    n: int
    category_correct: int
    tier_correct: int
    upgrades: int
    downgrades: int

    @property
    def category_accuracy(self) -> float | None:
        return self.category_correct / self.n if self.n else None

    @property
    def tier_accuracy(self) -> float | None:
        return self.tier_correct / self.n if self.n else None


@dataclass(frozen=True)
class PairConfusion:
    """Two categories of one tier and how often they are taken for each other."""

    source: str  # the smaller one, merged away
    target: str
    tier: str
    confused: int  # messages of either taken for the other
    pair_rows: int
    error_share: float  # of the pair's category errors, the share that are this confusion
    category_gain: float  # accuracy after the merge minus before (fraction of the whole pool)
    tier_gain: float
    candidate: bool

    @property
    def confusion_rate(self) -> float:
        return self.confused / self.pair_rows if self.pair_rows else 0.0


@dataclass(frozen=True)
class ClassifierReport:
    name: str
    method: str
    categories: tuple[str, ...]
    n: int
    category_correct: int
    tier_correct: int
    upgrades: int
    downgrades: int
    per_category: list[CategoryScore]
    confusion: np.ndarray  # rows: label, columns: prediction, in `categories` order
    pairs: list[PairConfusion] = field(default_factory=list)

    @property
    def category_accuracy(self) -> float:
        return self.category_correct / self.n if self.n else 0.0

    @property
    def tier_accuracy(self) -> float:
        return self.tier_correct / self.n if self.n else 0.0

    @property
    def merge_candidates(self) -> list[PairConfusion]:
        return [pair for pair in self.pairs if pair.candidate]

    def to_json(self) -> dict[str, Any]:
        return {
            "classifier": self.name,
            "method": self.method,
            "n": self.n,
            "tier_accuracy": round(self.tier_accuracy, 4),
            "category_accuracy": round(self.category_accuracy, 4),
            "tier_errors": self.n - self.tier_correct,
            "upgrades": self.upgrades,
            "downgrades": self.downgrades,
            "per_category": {
                s.category: {
                    "tier": s.tier,
                    "n": s.n,
                    "category_accuracy": _round(s.category_accuracy),
                    "tier_accuracy": _round(s.tier_accuracy),
                    "upgrades": s.upgrades,
                    "downgrades": s.downgrades,
                }
                for s in self.per_category
            },
            "confusion": {
                "labels": list(self.categories),
                "rows_are": "label",
                "matrix": self.confusion.astype(int).tolist(),
            },
            "same_tier_pairs": [
                {
                    "merge": pair.source,
                    "into": pair.target,
                    "tier": pair.tier,
                    "confused": pair.confused,
                    "pair_rows": pair.pair_rows,
                    "confusion_rate": round(pair.confusion_rate, 4),
                    "error_share": round(pair.error_share, 4),
                    "category_accuracy_gain": round(pair.category_gain, 4),
                    "tier_accuracy_gain": round(pair.tier_gain, 4),
                    "candidate": pair.candidate,
                }
                for pair in self.pairs
            ],
        }


@dataclass(frozen=True)
class ValidationReport:
    """Every classifier's report, the configured one first."""

    taxonomy_version: str
    pool_size: int
    k: int
    downgrade_cost: float
    classifiers: list[ClassifierReport]
    threshold: float = 0.0  # live mode's min_confidence
    calibration: Calibrated | None = None  # of the configured classifier

    @property
    def default(self) -> ClassifierReport:
        return self.classifiers[0]

    def get(self, name: str) -> ClassifierReport:
        return next(report for report in self.classifiers if report.name == name)

    def to_json(self) -> dict[str, Any]:
        default = self.default
        return {
            "taxonomy_version": self.taxonomy_version,
            "pool_size": self.pool_size,
            "k": self.k,
            "downgrade_cost": self.downgrade_cost,
            "classifier": default.name,
            "tier_accuracy": round(default.tier_accuracy, 4),
            "category_accuracy": round(default.category_accuracy, 4),
            "upgrades": default.upgrades,
            "downgrades": default.downgrades,
            "merge_candidates": [
                {"merge": p.source, "into": p.target, "category_accuracy_gain": p.category_gain}
                for p in default.merge_candidates
            ],
            "classifiers": [report.to_json() for report in self.classifiers],
            "calibration": None if self.calibration is None else self.calibration.to_json(),
        }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


# -- the two signals, each answering for every entry without having seen it --------------------


def knn_loo_probs(
    vectors: np.ndarray,
    label_index: np.ndarray,
    classes: int,
    k: int,
    progress: Progress | None = None,
) -> np.ndarray:
    """The k-NN vote of every entry over all the others: the similarity matrix a block of rows
    at a time, the entry itself masked out (the same weighting as `knn_vote`)."""
    n = len(vectors)
    probs = np.zeros((n, classes), dtype=np.float64)
    k = min(k, n - 1)
    if k < 1:
        return probs
    matrix = np.ascontiguousarray(vectors, dtype=np.float32)
    for start in range(0, n, BLOCK_ROWS):
        stop = min(start + BLOCK_ROWS, n)
        sims = matrix[start:stop] @ matrix.T
        rows = np.arange(stop - start)
        sims[rows, rows + start] = -np.inf
        top = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        top_sims = np.take_along_axis(sims, top, axis=1)
        weights = np.exp((top_sims - top_sims.max(axis=1, keepdims=True)) / KNN_TEMPERATURE)
        np.add.at(probs, (np.repeat(rows + start, k), label_index[top].ravel()), weights.ravel())
        if progress is not None:
            progress("k-NN leave-one-out", stop, n)
    totals = probs.sum(axis=1, keepdims=True)
    return np.divide(probs, totals, out=np.zeros_like(probs), where=totals > 0)


def fold_of(n: int, folds: int, seed: int = 0) -> np.ndarray:
    """A fixed shuffled fold number for each entry (the same pool gets the same folds)."""
    order = np.random.default_rng(seed).permutation(n)
    fold = np.empty(n, dtype=np.int64)
    fold[order] = np.arange(n) % folds
    return fold


def head_kfold_probs(
    vectors: np.ndarray,
    texts: Sequence[str],
    label_index: np.ndarray,
    categories: tuple[str, ...],
    folds: int = HEAD_FOLDS,
    progress: Progress | None = None,
) -> np.ndarray:
    """The configured classifier's calibrated probabilities for each entry, from the embedding
    head and the n-gram view fit on the other folds."""
    folds = max(2, min(folds, len(vectors)))
    classifier = LocalClassifier(categories)
    if progress is not None:
        progress(f"head and n-grams, {folds} folds", 0, 1)
    oof = classifier.out_of_fold(vectors, list(texts), label_index, folds)
    if progress is not None:
        progress(f"head and n-grams, {folds} folds", 1, 1)
    calibration = fit_calibration(oof.head, oof.ngrams, label_index, oof.nearest)
    return calibration.probs(oof.head, oof.ngrams, oof.nearest)


# -- decisions and scores ----------------------------------------------------------------------


def score(
    name: str,
    probs: np.ndarray,
    label_index: np.ndarray,
    taxonomy: Taxonomy,
    downgrade_cost: float,
    with_pairs: bool = True,
    folds: int = HEAD_FOLDS,
) -> ClassifierReport:
    categories = taxonomy.categories
    category_tier = np.array([TIERS.index(taxonomy.tier_of(c)) for c in categories])
    predicted, predicted_tier = decide_all(probs, category_tier, downgrade_cost)
    true_tier = category_tier[label_index]
    confusion = np.zeros((len(categories), len(categories)), dtype=np.int64)
    np.add.at(confusion, (label_index, predicted), 1)
    per_category = []
    for index, category in enumerate(categories):
        rows = label_index == index
        per_category.append(
            CategoryScore(
                category=category,
                tier=taxonomy.tier_of(category),
                n=int(rows.sum()),
                category_correct=int((predicted[rows] == index).sum()),
                tier_correct=int((predicted_tier[rows] == true_tier[rows]).sum()),
                upgrades=int((predicted_tier[rows] > true_tier[rows]).sum()),
                downgrades=int((predicted_tier[rows] < true_tier[rows]).sum()),
            )
        )
    report = ClassifierReport(
        name=name,
        method=METHODS[name].format(folds=folds),
        categories=categories,
        n=len(label_index),
        category_correct=int((predicted == label_index).sum()),
        tier_correct=int((predicted_tier == true_tier).sum()),
        upgrades=int((predicted_tier > true_tier).sum()),
        downgrades=int((predicted_tier < true_tier).sum()),
        per_category=per_category,
        confusion=confusion,
    )
    if not with_pairs:
        return report
    pairs = same_tier_pairs(report, probs, label_index, taxonomy, downgrade_cost)
    return replace(report, pairs=pairs)


def merge_probs(
    probs: np.ndarray, label_index: np.ndarray, source: int, target: int
) -> tuple[np.ndarray, np.ndarray]:
    """Probabilities and labels as if `source` had been merged into `target` (column kept at 0,
    so indices stay put)."""
    merged = probs.copy()
    merged[:, target] += merged[:, source]
    merged[:, source] = 0.0
    labels = np.where(label_index == source, target, label_index)
    return merged, labels


def same_tier_pairs(
    report: ClassifierReport,
    probs: np.ndarray,
    label_index: np.ndarray,
    taxonomy: Taxonomy,
    downgrade_cost: float,
) -> list[PairConfusion]:
    """Every pair of named categories sharing a tier, with what merging them would gain. The
    gain is estimated by adding the pair's probabilities, without a refit."""
    categories = taxonomy.categories
    counts = report.confusion.sum(axis=1)
    errors = counts - np.diag(report.confusion)
    pairs: list[PairConfusion] = []
    for a, first in enumerate(categories):
        for b in range(a + 1, len(categories)):
            second = categories[b]
            if UNKNOWN in (first, second) or taxonomy.tier_of(first) != taxonomy.tier_of(second):
                continue
            if counts[a] == 0 and counts[b] == 0:
                continue
            # The smaller one goes; on a tie the one listed later (usually the newer one).
            source, target = (a, b) if counts[a] < counts[b] else (b, a)
            confused = int(report.confusion[a, b] + report.confusion[b, a])
            pair_rows = int(counts[a] + counts[b])
            pair_errors = int(errors[a] + errors[b])
            share = confused / pair_errors if pair_errors else 0.0
            merged, labels = merge_probs(probs, label_index, source, target)
            after = score(report.name, merged, labels, taxonomy, downgrade_cost, False)
            rate = confused / pair_rows if pair_rows else 0.0
            pairs.append(
                PairConfusion(
                    source=categories[source],
                    target=categories[target],
                    tier=taxonomy.tier_of(first),
                    confused=confused,
                    pair_rows=pair_rows,
                    error_share=share,
                    category_gain=after.category_accuracy - report.category_accuracy,
                    tier_gain=after.tier_accuracy - report.tier_accuracy,
                    candidate=rate >= MIN_PAIR_CONFUSION and share >= MIN_ERROR_SHARE,
                )
            )
    pairs.sort(key=lambda pair: (-pair.confusion_rate, -pair.category_gain))
    return pairs


def validate(
    vectors: np.ndarray,
    labels: Sequence[str],
    taxonomy: Taxonomy,
    *,
    texts: Sequence[str],
    k: int,
    downgrade_cost: float,
    classifier: str = "head",
    folds: int = HEAD_FOLDS,
    threshold: float = 0.0,
    progress: Progress | None = None,
) -> ValidationReport:
    """Score the configured classifier (first) and the others over the pool, every entry
    answered by a signal that never saw it."""
    categories = taxonomy.categories
    index = {c: i for i, c in enumerate(categories)}
    strangers = sorted({label for label in labels if label not in index})
    if strangers:
        raise ValueError(
            f"the pool holds categories taxonomy {taxonomy.version} lacks: {', '.join(strangers)}"
        )
    if len(labels) < 2:
        raise ValueError("the pool needs at least two entries to validate")
    label_index = np.array([index[label] for label in labels], dtype=np.int64)
    folds = max(2, min(folds, len(labels)))  # as the head's folds are made, and reported
    with one_blas_thread():
        knn = knn_loo_probs(vectors, label_index, len(categories), k, progress)
        head = head_kfold_probs(vectors, texts, label_index, categories, folds, progress)
    signals = {"head": head, "knn": knn, "blend": 0.5 * head + 0.5 * knn}
    order = [classifier] + [name for name in ("head", "knn") if name != classifier]
    reports = [
        score(name, signals[name], label_index, taxonomy, downgrade_cost, folds=folds)
        for name in order
    ]
    return ValidationReport(
        taxonomy_version=taxonomy.version,
        pool_size=len(labels),
        k=k,
        downgrade_cost=downgrade_cost,
        classifiers=reports,
        threshold=threshold,
        calibration=calibrated(
            signals[classifier], label_index, taxonomy, downgrade_cost, threshold
        ),
    )
