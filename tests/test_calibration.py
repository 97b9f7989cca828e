"""Calibrated confidence stays honest off the pool: a message far from everything pooled is
less sure, so live mode asks the LLM where the local signal would guess."""

from __future__ import annotations

import numpy as np
import pytest

from router.config import LocalSignalSettings
from router.signals.calibration import Calibration, fit_calibration
from router.signals.classifier import LocalClassifier


def test_far_from_the_pool_means_less_sure():
    calibration = Calibration(1.0, 0.0, far_slope=20.0, far_pivot=0.9)
    logits = np.array([3.0, 0.0, 0.0])
    near = calibration.probs(logits, None, nearest=0.95).max()
    at_pivot = calibration.probs(logits, None, nearest=0.9).max()
    far = calibration.probs(logits, None, nearest=0.8).max()
    assert near == at_pivot > far
    assert far < LocalSignalSettings().min_confidence  # below live mode's bar: the LLM is asked


def test_the_fit_learns_distance_only_when_far_rows_are_wrong_more_often():
    rng = np.random.default_rng(0)
    n = 4000
    labels = rng.integers(0, 3, n)
    nearest = rng.uniform(0.75, 0.98, n)
    logits = np.zeros((n, 3))
    # Every row is read as sure as any other, but far rows (nearest < 0.85) are often wrong.
    wrong = (nearest < 0.85) & (rng.random(n) < 0.6)
    predicted = np.where(wrong, (labels + 1) % 3, labels)
    logits[np.arange(n), predicted] = 4.0
    learnt = fit_calibration(logits, np.zeros_like(logits), labels, nearest)
    assert learnt.far_slope > 0
    far = learnt.probs(logits[:1], None, np.array([0.76])).max()
    close = learnt.probs(logits[:1], None, np.array([0.97])).max()
    assert far < close

    # When distance says nothing about being right, the fit leaves confidence alone.
    honest = np.zeros((n, 3))
    honest[np.arange(n), labels] = 4.0
    assert fit_calibration(honest, np.zeros_like(honest), labels, nearest).far_slope == 0.0


def test_calibrating_by_writer_never_reads_a_writer_with_its_own_messages():
    """A writer repeats themselves; random folds would read each message beside its twin and
    call the pool surer than it is on a stranger's words."""
    rng = np.random.default_rng(1)
    categories = ("casual", "coding")
    base = rng.normal(size=(60, 16))
    vectors = np.vstack([base, base + rng.normal(scale=1e-3, size=base.shape)])
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    labels = np.tile(np.arange(60) % 2, 2)
    texts = [f"message {i % 60} by writer {i % 60 // 20}" for i in range(120)]
    writers = np.tile(np.arange(60) // 20, 2)  # twins share a writer: three writers
    unknown = np.isin(np.arange(120) % 60, range(10))
    writers[unknown] = -1  # messages from no training writer: never held out, never read
    classifier = LocalClassifier(categories)

    by_chance = classifier.out_of_fold(vectors, texts, labels, folds=5)
    assert by_chance.read.all() and (by_chance.nearest > 0.99).mean() > 0.5

    by_writer = classifier.out_of_fold(vectors, texts, labels, folds=5, groups=writers)
    assert (by_writer.read == ~unknown).all()
    for row in np.flatnonzero(by_writer.read):
        others = vectors[writers != writers[row]]
        assert by_writer.nearest[row] == pytest.approx(float((others @ vectors[row]).max()))
    assert (by_writer.nearest[by_writer.read] < 0.99).all()


def test_the_calibration_shipped_is_the_one_fit_on_the_writers_held_out_rows():
    rng = np.random.default_rng(2)
    categories = ("casual", "coding")
    base = rng.normal(size=(90, 16))
    labels_index = np.arange(90) % 2
    # A writer's twins, and a few rows labelled outside the taxonomy (dropped before fitting).
    vectors = np.vstack([base, base + rng.normal(scale=1e-3, size=base.shape)])
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    labels = [categories[i] for i in np.tile(labels_index, 2)]
    labels[:4] = ["retired"] * 4
    texts = [f"message {i % 90} by writer {i % 90 // 30}" for i in range(180)]
    writers = np.tile(np.arange(90) // 30, 2)

    by_chance = LocalClassifier(categories)
    by_chance.fit(vectors, texts, labels)
    by_writer = LocalClassifier(categories)
    by_writer.fit(vectors, texts, labels, groups=writers)

    keep = np.array([label in categories for label in labels])
    oof = by_writer.out_of_fold(
        vectors[keep],
        [t for t, k in zip(texts, keep, strict=True) if k],
        np.array([categories.index(label) for label in np.array(labels)[keep]]),
        folds=5,
        groups=writers[keep],
    )
    y = np.array([categories.index(label) for label in np.array(labels)[keep]])
    assert by_writer.calibration == fit_calibration(oof.head, oof.ngrams, y, oof.nearest)


def test_calibrating_by_writer_refuses_to_ship_an_uncalibrated_default():
    rng = np.random.default_rng(3)
    vectors = rng.normal(size=(40, 8))
    texts = [f"m{i}" for i in range(40)]
    labels = ["casual", "coding"] * 20
    with pytest.raises(ValueError, match="two writers"):
        LocalClassifier(("casual", "coding")).fit(vectors, texts, labels, groups=np.full(40, -1))
    with pytest.raises(ValueError, match="groups for"):
        LocalClassifier(("casual", "coding")).fit(vectors, texts, labels, groups=np.zeros(3))
