"""How far the local signal's confidence can be trusted: tier decisions for every row at once,
the expected calibration error with its reliability table, and what live mode's threshold buys."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from router.signals.calibration import ReliabilityBin, reliability
from router.taxonomy import TIERS, Taxonomy


def tier_costs(downgrade_cost: float) -> np.ndarray:
    """cost[chosen, true], as in `choose_tier`."""
    ranks = np.arange(len(TIERS))
    gap = ranks[:, None] - ranks[None, :]
    return np.where(gap < 0, -gap * downgrade_cost, gap).astype(float)


def decide_all(
    probs: np.ndarray, category_tier: np.ndarray, downgrade_cost: float
) -> tuple[np.ndarray, np.ndarray]:
    """`decide` for every row at once: the tier of least expected cost, then the likeliest
    category inside it. Returns (category index, tier index) per row."""
    membership = np.zeros((len(category_tier), len(TIERS)))
    membership[np.arange(len(category_tier)), category_tier] = 1.0
    tier_probs = probs @ membership
    tiers = np.argmin(tier_probs @ tier_costs(downgrade_cost).T, axis=1)
    inside = membership[:, tiers].T.astype(bool)  # (rows, categories): in the chosen tier
    masked = np.where(inside, probs, -np.inf)
    has_any = inside.any(axis=1)
    categories = np.where(has_any, masked.argmax(axis=1), probs.argmax(axis=1))
    return categories, tiers


@dataclass(frozen=True)
class Calibrated:
    """How far the configured classifier's confidence (its chosen tier's probability) can be
    trusted, and what live mode's threshold buys."""

    expected_calibration_error: float
    bins: list[ReliabilityBin]
    threshold: float
    alone: int  # entries at or above the threshold: the local signal decides them alone
    alone_tier_correct: int
    n: int

    @property
    def alone_share(self) -> float:
        return self.alone / self.n if self.n else 0.0

    @property
    def alone_tier_accuracy(self) -> float | None:
        return self.alone_tier_correct / self.alone if self.alone else None

    def to_json(self) -> dict[str, Any]:
        return {
            "expected_calibration_error": round(self.expected_calibration_error, 4),
            "reliability": [
                {
                    "confidence": [round(b.low, 2), round(b.high, 2)],
                    "n": b.count,
                    "mean_confidence": round(b.confidence, 4),
                    "tier_accuracy": round(b.accuracy, 4),
                }
                for b in self.bins
            ],
            "threshold": self.threshold,
            "decided_alone": self.alone,
            "decided_alone_share": round(self.alone_share, 4),
            "decided_alone_tier_accuracy": _round(self.alone_tier_accuracy),
        }


def calibrated(
    probs: np.ndarray,
    label_index: np.ndarray,
    taxonomy: Taxonomy,
    downgrade_cost: float,
    threshold: float,
) -> Calibrated:
    category_tier = np.array([TIERS.index(taxonomy.tier_of(c)) for c in taxonomy.categories])
    _, tiers = decide_all(probs, category_tier, downgrade_cost)
    membership = np.zeros((len(category_tier), len(TIERS)))
    membership[np.arange(len(category_tier)), category_tier] = 1.0
    confidence = (probs @ membership)[np.arange(len(tiers)), tiers]
    correct = tiers == category_tier[label_index]
    error, bins = reliability(confidence, correct.astype(float))
    alone = confidence >= threshold
    return Calibrated(
        error, bins, threshold, int(alone.sum()), int((correct & alone).sum()), len(tiers)
    )


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 4)
