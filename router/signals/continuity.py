"""Continuity: does a turn continue the previous task or start a new one? A logistic model over
the turn and its context (length in tokens, similarity to the previous user message, the gap,
how clearly the message alone names another task, cues read from its wording and from the two
messages' vectors, whether it answers someone else's message), fit on the training conversations
by scripts/fit_continuity.py."""

from __future__ import annotations

import io
import logging
import math
from dataclasses import dataclass, field
from importlib import resources

import numpy as np

from router.signals.classifier import LocalAnswer
from router.signals.ngrams import ngram_buckets
from router.taxonomy import TIERS, UNKNOWN, Taxonomy

log = logging.getLogger(__name__)

MODEL_FILE = "continuity.npz"
UNKNOWN_GAP_S = 60.0  # history without times (a stateless client): one sitting
# The training conversations' gaps start at about 8 s; a gap below that (a quick paste right
# after an answer) is read as that, not extrapolated into "surely the same task".
MIN_GAP_S = 8.0
FEATURES = (
    "log_tokens",
    "similarity",
    "log_gap",
    "alone_previous_category",
    "alone_previous_tier",
    "alone_confidence",
    "alone_casual",
    "previous_is_casual",
    "wording_cue",
    "expected_tier_change",
    "embedding_cue",
    "another_speaker",
)
EMBEDDING_CUE = FEATURES.index("embedding_cue")


@dataclass(frozen=True)
class PreviousTurn:
    """The conversation's last user turn as the router knows it."""

    category: str
    at: float | None  # None when the caller's history carries no times
    text: str  # empty when it came from another process with [privacy] store_prompts off
    # The message's vector when it came from another process (its text is not in this
    # process's embedding cache, or not sent at all).
    vector: np.ndarray | None = field(default=None, compare=False, repr=False)
    # Someone else sent it: the turn is a reply to another person's message (a reply to
    # grandma's request is rarely a request to go on with her task).
    another_speaker: bool = False


@dataclass(frozen=True)
class TurnFeatures:
    tokens: int
    similarity: float
    gap_s: float | None
    alone: np.ndarray  # the message's calibrated category probabilities on its own
    previous_index: int
    cue: float
    embedding_cue: float
    another_speaker: bool = False


@dataclass(frozen=True)
class EmbeddingCue:
    """A linear read of the turn's vector beside the previous user message's: the log-odds that
    the turn continues, in the vector space of the embedder named (another embedder's vectors
    mean nothing to it). A third block of weights, when fit, reads the turn's vector again when
    the previous message is a task (not casual): "thanks!" after chatter and after a request are
    not the same turn."""

    weights: np.ndarray  # the turn's vector's, the previous message's, [the turn's after a task]
    bias: float
    embedder_id: str

    def fits(self, dim: int) -> bool:
        return len(self.weights) in (2 * dim, 3 * dim)

    def score(
        self, vector: np.ndarray, previous_vector: np.ndarray, after_task: bool = False
    ) -> float:
        dim = len(vector)
        score = self.weights[:dim] @ vector + self.weights[dim : 2 * dim] @ previous_vector
        if after_task and len(self.weights) == 3 * dim:
            score += self.weights[2 * dim :] @ vector
        return float(score + self.bias)


def with_pairs(z: np.ndarray) -> np.ndarray:
    """Standardized features followed by the product of every pair of them (last axis): how
    much one feature says can depend on another (a short turn after a request, not after a
    question that was answered)."""
    i, j = np.triu_indices(z.shape[-1], 1)
    return np.concatenate([z, z[..., i] * z[..., j]], axis=-1)


class ContinuityModel:
    """Weights over standardized features (and, when `pairs`, their pairwise products), the
    wording cue's log-odds by n-gram bucket, and the embedding cue."""

    def __init__(
        self,
        taxonomy: Taxonomy,
        weights: np.ndarray,
        bias: float,
        mean: np.ndarray,
        scale: np.ndarray,
        cue: np.ndarray | None,
        embedding: EmbeddingCue | None = None,
        pairs: bool = False,
    ) -> None:
        self.taxonomy = taxonomy
        self.weights, self.bias, self.mean, self.scale = weights, bias, mean, scale
        self.pairs = pairs
        self.cue = cue
        self.embedding = embedding
        self._tier_of = np.array([TIERS.index(taxonomy.tier_of(c)) for c in taxonomy.categories])
        self._casual = (
            taxonomy.categories.index("casual") if "casual" in taxonomy.categories else -1
        )

    @classmethod
    def load(
        cls, taxonomy: Taxonomy, embedder_id: str | None, data: bytes | None = None
    ) -> ContinuityModel:
        """The shipped model; its embedding cue only for the embedder it was fit with."""
        raw = data or resources.files("router").joinpath("data", MODEL_FILE).read_bytes()
        with np.load(io.BytesIO(raw)) as stored:
            fit_on = tuple(str(name) for name in stored["features"])
            if fit_on != FEATURES:  # a file from another release: its weights mean nothing here
                raise ValueError(
                    f"{MODEL_FILE} was fit on {len(fit_on)} features, this release reads"
                    f" {len(FEATURES)}: reinstall crabbot"
                )
            buckets, values = int(stored["cue_buckets"]), stored["cue_value"]
            if len(values) == buckets:  # every bucket set: the index (sorted, see dump) is all
                cue = values.astype(np.float32)  # of them, 2 MB not worth inflating at start
            else:
                cue = np.zeros(buckets, np.float32)
                cue[stored["cue_index"]] = values
            fit_with = str(stored["embedder_id"])
            embedding: EmbeddingCue | None = EmbeddingCue(
                stored["embedding_weights"], float(stored["embedding_bias"]), fit_with
            )
            if fit_with != embedder_id:
                log.info(
                    "the continuity model's embedding cue was fit on %s, not %s: left out",
                    fit_with,
                    embedder_id,
                )
                embedding = None
            return cls(
                taxonomy,
                stored["weights"],
                float(stored["bias"]),
                stored["mean"],
                stored["scale"],
                cue,
                embedding,
                bool(stored["pairs"]) if "pairs" in stored.files else False,
            )

    def dump(self) -> bytes:
        assert self.cue is not None and self.embedding is not None
        nonzero = np.flatnonzero(self.cue)
        buffer = io.BytesIO()
        np.savez_compressed(
            buffer,
            weights=self.weights,
            bias=np.array(self.bias),
            mean=self.mean,
            scale=self.scale,
            cue_buckets=np.array(len(self.cue)),
            cue_index=nonzero,
            cue_value=self.cue[nonzero],
            embedding_weights=self.embedding.weights.astype(np.float32),
            embedding_bias=np.array(self.embedding.bias),
            embedder_id=np.array(self.embedding.embedder_id),
            features=np.array(FEATURES),
            pairs=np.array(self.pairs),
        )
        return buffer.getvalue()

    def wording_cue(self, text: str) -> float:
        if self.cue is None:
            return 0.0
        buckets = ngram_buckets(text) % len(self.cue)
        return float(self.cue[buckets].sum() / math.sqrt(len(buckets)))

    def embedding_cue(
        self, vector: np.ndarray, previous_vector: np.ndarray, previous_index: int
    ) -> float:
        """Without a cue for this embedder, the feature's training mean: it then moves nothing."""
        if self.embedding is None or not self.embedding.fits(len(vector)):
            return float(self.mean[EMBEDDING_CUE])
        return self.embedding.score(vector, previous_vector, previous_index != self._casual)

    def vector(self, turn: TurnFeatures) -> np.ndarray:
        alone = turn.alone
        tier_probs = np.zeros(len(TIERS))
        np.add.at(tier_probs, self._tier_of, alone)
        gap = UNKNOWN_GAP_S if turn.gap_s is None else max(turn.gap_s, MIN_GAP_S)
        previous_tier = self._tier_of[turn.previous_index]
        return np.array(
            [
                math.log1p(turn.tokens),
                turn.similarity,
                math.log1p(gap),
                alone[turn.previous_index],
                tier_probs[previous_tier],
                alone.max(),
                alone[self._casual] if self._casual >= 0 else 0.0,
                float(turn.previous_index == self._casual),
                turn.cue,
                float(tier_probs @ np.arange(len(TIERS))) - previous_tier,
                turn.embedding_cue,
                float(turn.another_speaker),
            ]
        )

    def p_continue(self, turn: TurnFeatures) -> float:
        z = (self.vector(turn) - self.mean) / self.scale
        if self.pairs:
            z = with_pairs(z)
        return float(1.0 / (1.0 + math.exp(-(z @ self.weights + self.bias))))


def carry(alone: np.ndarray, previous_index: int, p_continue: float) -> np.ndarray:
    """The turn's category probabilities: the previous task with the chance it continues, else
    what the message says alone."""
    carried = (1.0 - p_continue) * alone
    carried[previous_index] += p_continue
    return carried


def carries(category: str | None, taxonomy: Taxonomy) -> bool:
    """`unknown` (and anything the taxonomy lacks) is never carried to the next turn."""
    return category is not None and category != UNKNOWN and category in taxonomy.categories


def content_first(alone: LocalAnswer, carried: LocalAnswer, min_confidence: float) -> LocalAnswer:
    """Content before context: a message that alone reads as a higher tier, with at least
    `min_confidence`, keeps that tier whatever the conversation says; the context decides only
    what the message alone cannot."""
    if TIERS.index(alone.tier) > TIERS.index(carried.tier) and alone.confidence >= min_confidence:
        return alone
    return carried


def within_horizon(previous_at: float | None, now: float, horizon_h: float) -> bool:
    """Whether a turn is close enough to its context to continue it (an unknown time is)."""
    return previous_at is None or now - previous_at <= horizon_h * 3600.0
