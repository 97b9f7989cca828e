"""Calibrated confidence: the embedding head's logits and the n-gram view's scores are combined
with two weights fit on out-of-fold predictions to minimize log loss, so the combined
probabilities mean what they say; plus the expected calibration error and a reliability table."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

HEAD_SCALES = np.round(np.arange(0.3, 2.51, 0.1), 2)
NGRAM_SCALES = np.round(np.arange(0.0, 1.51, 0.05), 2)


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=-1, keepdims=True)


FAR_SLOPES = np.arange(0.0, 40.1, 2.0)
# A calibration serves a pool until it is this much larger (or, for the shipped one, smaller)
# than the pool it was chosen on: then the head is refit and calibrated again.
SERVES_GROWTH = 1.05


@dataclass(frozen=True)
class Calibration:
    """probs = softmax(shrink * (head_scale * head logits + ngram_scale * n-gram scores)), where
    shrink = exp(-far_slope * max(0, far_pivot - nearest)): a message further from its nearest
    pooled neighbour than the messages it was calibrated on are (far_pivot, their median
    similarity to the rest, read out of fold) is less sure."""

    head_scale: float = 1.0
    ngram_scale: float = 0.0
    far_slope: float = 0.0
    far_pivot: float = 1.0

    def probs(
        self,
        head_logits: np.ndarray,
        ngram_scores: np.ndarray | None,
        nearest: float | np.ndarray | None = None,
    ) -> np.ndarray:
        logits = self.head_scale * head_logits
        if ngram_scores is not None and self.ngram_scale:
            logits = logits + self.ngram_scale * ngram_scores
        if nearest is not None and self.far_slope:
            distance = np.maximum(0.0, self.far_pivot - np.asarray(nearest, dtype=np.float64))
            shrink = np.exp(-self.far_slope * distance)
            logits = logits * (shrink[..., None] if np.ndim(shrink) else shrink)
        return softmax(logits)


def log_loss(probs: np.ndarray, labels: np.ndarray) -> float:
    return float(-np.log(probs[np.arange(len(labels)), labels] + 1e-12).mean())


def fit_calibration(
    head_logits: np.ndarray,
    ngram_scores: np.ndarray,
    labels: np.ndarray,
    nearest: np.ndarray | None = None,
) -> Calibration:
    """The weights with the least log loss on out-of-fold predictions (a grid: two numbers),
    then, given each row's nearest out-of-fold neighbour, how much distance lowers confidence."""
    best, best_loss = Calibration(), float("inf")
    for head_scale in HEAD_SCALES:
        for ngram_scale in NGRAM_SCALES:
            candidate = Calibration(float(head_scale), float(ngram_scale))
            loss = log_loss(candidate.probs(head_logits, ngram_scores), labels)
            if loss < best_loss:
                best, best_loss = candidate, loss
    if nearest is None or not len(nearest):
        return best
    pivot = float(np.median(nearest))
    scaled = best
    for slope in FAR_SLOPES[1:]:
        candidate = Calibration(best.head_scale, best.ngram_scale, float(slope), pivot)
        loss = log_loss(candidate.probs(head_logits, ngram_scores, nearest), labels)
        if loss < best_loss:
            scaled, best_loss = candidate, loss
    return scaled


@dataclass(frozen=True)
class ReliabilityBin:
    low: float
    high: float
    count: int
    confidence: float  # mean stated confidence in the bin
    accuracy: float  # share of the bin that was right


def reliability(
    confidence: np.ndarray, correct: np.ndarray, bins: int = 10
) -> tuple[float, list[ReliabilityBin]]:
    """Expected calibration error (weighted mean |accuracy - confidence| over equal-width bins)
    and the bins themselves."""
    edges = np.linspace(0.0, 1.0, bins + 1)
    table: list[ReliabilityBin] = []
    error = 0.0
    for i in range(bins):
        inside = (confidence > edges[i]) & (confidence <= edges[i + 1])
        if i == 0:
            inside |= confidence == 0.0
        count = int(inside.sum())
        if not count:
            continue
        mean_confidence = float(confidence[inside].mean())
        accuracy = float(correct[inside].mean())
        error += count / len(confidence) * abs(accuracy - mean_confidence)
        table.append(ReliabilityBin(edges[i], edges[i + 1], count, mean_confidence, accuracy))
    return error, table
