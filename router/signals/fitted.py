"""What a fit of the pool makes: the local classifier and, for a large pool, its search index;
stored together (npz bytes) under the fingerprint of the rows they were made from."""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any

import numpy as np

from router.pool.vector_index import EXACT_LIMIT, CoarseIndex
from router.signals.calibration import Calibration
from router.signals.classifier import HiddenLayerHead, LocalClassifier


@dataclass(frozen=True)
class FittedPool:
    classifier: LocalClassifier
    index: CoarseIndex | None  # None: a pool small enough to search exactly, or none stored

    def to_bytes(self) -> bytes:
        arrays: dict[str, Any] = {"trained_on": np.array([self.classifier.trained_on])}
        if self.classifier.ready:
            arrays |= self.classifier.state()
        if self.index is not None:
            arrays |= {f"index_{name}": value for name, value in self.index.state().items()}
        buffer = io.BytesIO()
        np.savez_compressed(buffer, **arrays)
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, categories: tuple[str, ...], blob: bytes) -> FittedPool:
        """Raises ValueError or KeyError on bytes that are not a fitted state."""
        with np.load(io.BytesIO(blob)) as stored:
            arrays = {name: stored[name] for name in stored}
        if HiddenLayerHead.STATE_NAMES["weights"] in arrays:
            classifier = LocalClassifier.from_state(categories, arrays)
        else:  # too little to fit: the k-NN vote answers
            classifier = LocalClassifier(categories)
            classifier.trained_on = int(arrays["trained_on"][0])
        index = None
        if "index_centroids" in arrays:
            index = CoarseIndex(arrays["index_centroids"], arrays["index_assignment"])
        return cls(classifier, index)


def fit_pool(
    vectors: np.ndarray,
    texts: list[str],
    labels: list[str],
    categories: tuple[str, ...],
    calibration: Calibration | None,
) -> FittedPool:
    """The classifier fit on these rows (calibrated by cross-validation unless `calibration`
    is given) and, past EXACT_LIMIT rows, their search index."""
    classifier = LocalClassifier(categories)
    classifier.fit(vectors, texts, labels, calibration)
    index = CoarseIndex.build(vectors) if len(vectors) > EXACT_LIMIT else None
    return FittedPool(classifier, index)
