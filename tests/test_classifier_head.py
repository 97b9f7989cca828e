"""The local classifier's head: it reads what a straight line through the vectors cannot, and
the same pool always fits the same head (a restart or a second process routes alike)."""

from __future__ import annotations

import numpy as np

from router.signals.classifier import HiddenLayerHead


def crossed_rows(n: int, seed: int) -> tuple[np.ndarray, list[str]]:
    """Casual where two directions agree in sign, coding where they differ: no hyperplane
    splits these (a linear head is right about half the time)."""
    rng = np.random.default_rng(seed)
    vectors = rng.normal(size=(n, 12)).astype(np.float32)
    agree = np.sign(vectors[:, 0]) == np.sign(vectors[:, 1])
    return vectors, ["casual" if a else "coding" for a in agree]


def test_the_head_learns_a_task_no_straight_line_separates():
    vectors, labels = crossed_rows(600, seed=0)
    head = HiddenLayerHead(("casual", "coding"))
    head.fit(vectors, labels)
    fresh, truth = crossed_rows(300, seed=1)
    read = np.array(head.categories)[head.logits(fresh).argmax(axis=1)]
    assert (read == np.array(truth)).mean() > 0.75


def test_the_same_pool_fits_the_same_head():
    vectors, labels = crossed_rows(200, seed=2)
    first, second = HiddenLayerHead(("casual", "coding")), HiddenLayerHead(("casual", "coding"))
    first.fit(vectors, labels)
    second.fit(vectors, labels)
    assert np.array_equal(first.logits(vectors), second.logits(vectors))
    restored = HiddenLayerHead(("casual", "coding"))
    restored.load_state(first.state(), first.trained_on)
    assert np.array_equal(restored.logits(vectors), first.logits(vectors))


def test_a_fit_stored_by_this_release_is_no_head_to_an_older_reader():
    """An older release still running beside upgraded files (its refit child starts from
    them) must not read the output layer as its linear head's weights: the names it looked
    for are absent, so it falls back to the k-NN vote."""
    vectors, labels = crossed_rows(100, seed=3)
    head = HiddenLayerHead(("casual", "coding"))
    head.fit(vectors, labels)
    linear_heads_names = {"head_weights", "head_bias", "head_mean", "head_scale"}
    assert not linear_heads_names & set(head.state())
