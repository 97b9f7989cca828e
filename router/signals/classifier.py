"""The local signal's classifier: a one-hidden-layer head on the pool vectors and a character
n-gram view, calibrated together (or a similarity-weighted k-NN vote), turned into a tier by
expected cost (a downgrade costs more than an upgrade)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from router.embedding.blas import one_blas_thread
from router.pool.pool import Neighbour
from router.signals.calibration import Calibration, fit_calibration, softmax
from router.signals.ngrams import NgramNaiveBayes, ngram_buckets
from router.taxonomy import TIERS, Taxonomy

CALIBRATION_FOLDS = 5
KNN_TEMPERATURE = 0.02  # e5 similarities crowd into 0.75-0.95; this spreads the vote over them


@dataclass(frozen=True)
class LocalAnswer:
    category: str
    tier: str
    confidence: float
    neighbours: list[Neighbour]
    # Each tier's probability (by TIERS' order), when the answer was read from probabilities.
    tier_probabilities: tuple[float, ...] = ()


class HiddenLayerHead:
    """A softmax over one hidden layer (ReLU) on standardized pool vectors, fit by minibatch
    AdamW with input dropout. Held out by writer, it reads text unlike the pool's better than a
    linear head (pooled rows' tiers 0.955 against 0.944, casual rows 0.944 against 0.923)."""

    HIDDEN = 256
    EPOCHS = 20
    MIN_STEPS, MAX_STEPS = 300, 2000  # a small pool still learns; a large one stays quick
    BATCH = 128
    RATE, DECAY, DROPOUT = 1e-3, 1e-2, 0.2

    def __init__(self, categories: tuple[str, ...]) -> None:
        self.categories = categories
        self._params: dict[str, np.ndarray] | None = None
        self.trained_on = 0

    @property
    def ready(self) -> bool:
        return self._params is not None

    def fit(self, vectors: np.ndarray, labels: list[str], seed: int = 0) -> None:
        with one_blas_thread():
            self._fit(vectors, labels, seed)

    def _fit(self, vectors: np.ndarray, labels: list[str], seed: int) -> None:
        index = {c: i for i, c in enumerate(self.categories)}
        keep = [i for i, label in enumerate(labels) if label in index]
        if len({labels[i] for i in keep}) < 2:
            self._params = None
            return
        x = vectors[keep].astype(np.float32)
        y = np.array([index[labels[i]] for i in keep])
        mean = x.mean(axis=0)
        scale = x.std(axis=0) + 1e-6
        x = (x - mean) / scale
        n, dim = x.shape
        classes = len(self.categories)
        rng = np.random.default_rng(seed)
        params = {
            "hidden_weights": (rng.standard_normal((dim, self.HIDDEN)) * np.sqrt(2.0 / dim)),
            "hidden_bias": np.zeros(self.HIDDEN),
            "weights": rng.standard_normal((self.HIDDEN, classes)) * np.sqrt(1.0 / self.HIDDEN),
            "bias": np.zeros(classes),
        }
        params = {name: value.astype(np.float32) for name, value in params.items()}
        moments = {name: (np.zeros_like(v), np.zeros_like(v)) for name, v in params.items()}
        batches = max(1, -(-n // self.BATCH))
        steps = int(np.clip(self.EPOCHS * batches, self.MIN_STEPS, self.MAX_STEPS))
        order = rng.permutation(n)
        for step in range(1, steps + 1):
            if (step - 1) % batches == 0:
                order = rng.permutation(n)
            rows = order[((step - 1) % batches) * self.BATCH :][: self.BATCH]
            keep_mask = rng.random((len(rows), dim)) >= self.DROPOUT
            xb = x[rows] * keep_mask / np.float32(1.0 - self.DROPOUT)
            grads = self._gradients(params, xb, y[rows])
            for name, grad in grads.items():
                first, second = moments[name]
                first *= 0.9
                first += 0.1 * grad
                second *= 0.999
                second += 0.001 * grad * grad
                unbiased = first / (1 - 0.9**step) / (np.sqrt(second / (1 - 0.999**step)) + 1e-8)
                params[name] -= self.RATE * (unbiased + self.DECAY * params[name])
        self._params = params | {"mean": mean, "scale": scale}
        self.trained_on = len(keep)

    @staticmethod
    def _gradients(
        params: dict[str, np.ndarray], x: np.ndarray, y: np.ndarray
    ) -> dict[str, np.ndarray]:
        """Of the mean cross-entropy of one batch. Every row weighs the same, so the head learns
        the pool's own mix of tasks; the expected-cost decision (a downgrade costs more) is where
        the asymmetry lives. Weighing the classes even (casual, half the pool, at a fifth of the
        rest) read casual messages held out by writer 0.942 against 0.960."""
        hidden = np.maximum(x @ params["hidden_weights"] + params["hidden_bias"], 0.0)
        probs = softmax(hidden @ params["weights"] + params["bias"])
        error = probs
        error[np.arange(len(y)), y] -= 1.0
        error /= len(y)
        back = (error @ params["weights"].T) * (hidden > 0)
        return {
            "hidden_weights": x.T @ back,
            "hidden_bias": back.sum(axis=0),
            "weights": hidden.T @ error,
            "bias": error.sum(axis=0),
        }

    # Stored under names the linear head never used: a running older release that reads a fit
    # this one stored (a refit child started from upgraded files) finds no head and falls back
    # to the k-NN vote instead of misreading the output layer as its weights.
    STATE_NAMES = {
        "hidden_weights": "head_hidden_weights",
        "hidden_bias": "head_hidden_bias",
        "weights": "head_output_weights",
        "bias": "head_output_bias",
        "mean": "head_input_mean",
        "scale": "head_input_scale",
    }

    def state(self) -> dict[str, np.ndarray]:
        assert self._params is not None
        return {self.STATE_NAMES[name]: value for name, value in self._params.items()}

    def load_state(self, state: dict[str, np.ndarray], trained_on: int) -> None:
        self._params = {name: state[key] for name, key in self.STATE_NAMES.items()}
        self.trained_on = trained_on

    def logits(self, vectors: np.ndarray) -> np.ndarray:
        """Raw class scores for one vector or a matrix of them."""
        assert self._params is not None
        params = self._params
        x = (vectors.astype(np.float32) - params["mean"]) / params["scale"]
        hidden = np.maximum(x @ params["hidden_weights"] + params["hidden_bias"], 0.0)
        return hidden @ params["weights"] + params["bias"]


@dataclass(frozen=True)
class OutOfFold:
    """Every pooled row read by models fit without its fold."""

    head: np.ndarray  # head logits
    ngrams: np.ndarray  # n-gram scores
    nearest: np.ndarray  # similarity to the nearest row of the other folds
    read: np.ndarray  # which rows were held out and read (all, unless folds were groups)


class LocalClassifier:
    """The local signal's classifier: the embedding head and the n-gram view, combined by weights
    fit on out-of-fold predictions, which also calibrates its probabilities."""

    def __init__(self, categories: tuple[str, ...]) -> None:
        self.categories = categories
        self.head = HiddenLayerHead(categories)
        self.ngrams = NgramNaiveBayes(len(categories))
        self.calibration = Calibration()
        self.trained_on = 0

    @property
    def ready(self) -> bool:
        return self.head.ready and self.ngrams.ready

    def _known(self, texts: list[str], labels: list[str]) -> tuple[list[int], np.ndarray]:
        index = {c: i for i, c in enumerate(self.categories)}
        keep = [i for i, label in enumerate(labels) if label in index]
        return keep, np.array([index[labels[i]] for i in keep], dtype=np.int64)

    def fit(
        self,
        vectors: np.ndarray,
        texts: list[str],
        labels: list[str],
        calibration: Calibration | None = None,
        folds: int = CALIBRATION_FOLDS,
        groups: np.ndarray | None = None,
    ) -> None:
        """Fit both views on everything; calibrate by `folds`-fold refits unless given, or, with
        `groups` (per row: its writer's number, -1 for none), on the writers' rows, each read
        by models that never saw its writer."""
        if groups is not None and len(groups) != len(texts):
            raise ValueError(f"{len(groups)} groups for {len(texts)} rows")
        keep, y = self._known(texts, labels)
        kept_texts = [texts[i] for i in keep]
        self.trained_on = len(keep)
        if len(set(y.tolist())) < 2:  # nothing to tell apart yet: the k-NN vote answers
            return
        self.head.fit(vectors[keep], [labels[i] for i in keep])
        self.ngrams.fit(kept_texts, y)
        if calibration is None:
            kept_groups = None if groups is None else groups[keep]
            oof = self.out_of_fold(vectors[keep], kept_texts, y, folds, groups=kept_groups)
            read = oof.read
            if kept_groups is not None and len(set(kept_groups[read].tolist())) < 2:
                # Nothing to calibrate on: never ship the uncalibrated default silently.
                raise ValueError("calibrating by writer needs at least two writers' rows")
            calibration = fit_calibration(
                oof.head[read], oof.ngrams[read], y[read], oof.nearest[read]
            )
        self.calibration = calibration

    def out_of_fold(
        self,
        vectors: np.ndarray,
        texts: list[str],
        y: np.ndarray,
        folds: int,
        seed: int = 0,
        groups: np.ndarray | None = None,
    ) -> OutOfFold:
        """Head logits, n-gram scores and the nearest neighbour's similarity for every row,
        from models and a pool that never saw it: `folds` random folds, or one fold a group
        (rows of group -1 are never held out, so never read)."""
        head_oof = np.zeros((len(y), len(self.categories)))
        ngram_oof = np.zeros_like(head_oof)
        nearest_oof = np.ones(len(y))
        read = np.zeros(len(y), dtype=bool)
        hashed = [ngram_buckets(text) for text in texts]
        fold_of = np.empty(len(y), dtype=np.int64)
        if groups is None:
            fold_of[np.random.default_rng(seed).permutation(len(y))] = np.arange(len(y)) % folds
        else:
            fold_of[:] = groups
        for fold in np.unique(fold_of[fold_of >= 0]):
            held = np.flatnonzero(fold_of == fold)
            train = np.flatnonzero(fold_of != fold)
            head = HiddenLayerHead(self.categories)
            head.fit(vectors[train], [self.categories[i] for i in y[train]])
            ngrams = NgramNaiveBayes(len(self.categories))
            ngrams.fit_buckets([hashed[i] for i in train], y[train])
            if not head.ready or not len(held):
                continue
            head_oof[held] = head.logits(vectors[held])
            ngram_oof[held] = np.stack([ngrams.scores_buckets(hashed[i]) for i in held])
            nearest_oof[held] = nearest_similarity(vectors[held], vectors[train])
            read[held] = True
        return OutOfFold(head_oof, ngram_oof, nearest_oof, read)

    def state(self) -> dict[str, np.ndarray]:
        """Everything fitted, as arrays (stored so a restart need not fit again)."""
        calibration = self.calibration
        return {
            **self.head.state(),
            **self.ngrams.state(),
            "calibration": np.array(
                [
                    calibration.head_scale,
                    calibration.ngram_scale,
                    calibration.far_slope,
                    calibration.far_pivot,
                ]
            ),
            "trained_on": np.array([self.trained_on]),
        }

    @classmethod
    def from_state(
        cls, categories: tuple[str, ...], state: dict[str, np.ndarray]
    ) -> LocalClassifier:
        classifier = cls(categories)
        classifier.trained_on = int(state["trained_on"][0])
        classifier.head.load_state(state, classifier.trained_on)
        classifier.ngrams.load_state(state)
        classifier.calibration = Calibration(*(float(v) for v in state["calibration"]))
        return classifier

    def probs(self, vector: np.ndarray, text: str, nearest: float | None = None) -> np.ndarray:
        """Calibrated category probabilities of one message; `nearest`, its nearest pooled
        neighbour's similarity, lowers them far from the pool."""
        return self.calibration.probs(self.head.logits(vector), self.ngrams.scores(text), nearest)


def nearest_similarity(queries: np.ndarray, rows: np.ndarray, cells: int = 1 << 24) -> np.ndarray:
    """Each query's similarity to its nearest row, a block of queries at a time (a whole
    similarity matrix of a 100k pool's fold would take gigabytes)."""
    block = max(1, cells // max(1, len(rows)))
    nearest = np.empty(len(queries), dtype=np.float32)
    for start in range(0, len(queries), block):
        nearest[start : start + block] = (queries[start : start + block] @ rows.T).max(axis=1)
    return nearest


def knn_vote(neighbours: list[Neighbour], categories: tuple[str, ...]) -> np.ndarray:
    """Category probabilities from the neighbours, each weighted by its similarity."""
    probs = np.zeros(len(categories))
    if not neighbours:
        return probs
    index = {c: i for i, c in enumerate(categories)}
    top = neighbours[0].similarity
    for neighbour in neighbours:
        if neighbour.category in index:
            probs[index[neighbour.category]] += np.exp(
                (neighbour.similarity - top) / KNN_TEMPERATURE
            )
    total = probs.sum()
    return probs / total if total > 0 else probs


def choose_tier(tier_probs: np.ndarray, downgrade_cost: float) -> int:
    """The tier with the least expected cost; sending work below its tier costs more."""
    ranks = np.arange(len(TIERS))
    gap = ranks[:, None] - ranks[None, :]  # chosen - true
    cost = np.where(gap < 0, -gap * downgrade_cost, gap).astype(float)
    return int(np.argmin(cost @ tier_probs))


def decide(
    probs: np.ndarray,
    taxonomy: Taxonomy,
    downgrade_cost: float,
    neighbours: list[Neighbour],
) -> LocalAnswer:
    """Tier first (what matters), then the likeliest category inside that tier."""
    categories = taxonomy.categories
    tier_of = [TIERS.index(taxonomy.tier_of(c)) for c in categories]
    tier_probs = np.zeros(len(TIERS))
    np.add.at(tier_probs, tier_of, probs)
    tier_index = choose_tier(tier_probs, downgrade_cost)
    inside = [i for i, t in enumerate(tier_of) if t == tier_index]
    best = max(inside, key=lambda i: probs[i]) if inside else int(np.argmax(probs))
    return LocalAnswer(
        category=categories[best],
        tier=TIERS[tier_index],
        confidence=float(tier_probs[tier_index]),
        neighbours=neighbours,
        tier_probabilities=tuple(float(p) for p in tier_probs),
    )


def blend(
    head: np.ndarray | None, knn: np.ndarray, kind: str, head_weight: float = 0.5
) -> np.ndarray:
    if kind == "knn" or head is None:
        return knn
    if kind == "head":
        return head
    return head_weight * head + (1.0 - head_weight) * knn


@dataclass(frozen=True)
class LocalResult:
    """The local signal's work on one message: its vector, its answer with and without the
    conversation's prior, and how long it took."""

    vector: np.ndarray
    answer: LocalAnswer | None
    unprimed: LocalAnswer | None
    latency_ms: float
    p_continue: float | None = None  # the continuity model's estimate, when a task could carry
    read_against: tuple[str, ...] = ()  # the tasks (not chatter) the turn could have gone on with

    @property
    def swayed(self) -> bool:
        """Whether the conversation, not the message alone, named the answer's task."""
        return (
            self.answer is not None
            and self.unprimed is not None
            and self.unprimed.category != self.answer.category
        )

    @property
    def context_decided(self) -> bool:
        """Whether the conversation had a say in the answer: it named the task, or the turn was
        read against a task and left it (that it does not go on with the task is the continuity
        model's call as much as that it does: "it's google sheets btw" after a coding request)."""
        left = self.answer is not None and self.answer.category not in self.read_against
        return self.swayed or (bool(self.read_against) and left)
