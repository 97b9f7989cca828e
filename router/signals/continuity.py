"""Continuity: does a turn continue the previous task or start a new one? A logistic model over
the turn and its context (length in tokens, similarity to the previous user message, the gap,
how clearly the message alone names another task, cues read from its wording and from the two
messages' vectors, how often the training follow-ups nearest it continued, whether it answers
someone else's message), fit on the training conversations by scripts/fit_continuity.py."""

from __future__ import annotations

import io
import logging
import math
from dataclasses import dataclass, field, replace
from importlib import resources

import numpy as np

from router.config import ContextSettings
from router.signals.classifier import LocalAnswer
from router.signals.ngrams import ngram_buckets
from router.taxonomy import TIERS, UNKNOWN, Taxonomy

log = logging.getLogger(__name__)

MODEL_FILE = "continuity.npz"
CHATTER = "casual"  # the category whose turns are chatter, not a task
UNKNOWN_GAP_S = 60.0  # history without times (a stateless client): one sitting
# The training conversations' gaps start at about 8 s; a gap below that (a quick paste right
# after an answer) is read as that, not extrapolated into "surely the same task".
MIN_GAP_S = 8.0
# A context turn held at least this sure of its task (content first's default bar; a request
# that named it clearly, or a turn that stayed on such a request) lends that confidence to the
# turns that stay on it; one held less sure does not, so chatter misread as a task is not held
# to it turn after turn. Not tuned, and the default only: an operator's bar does not move it.
CLEAR_TASK: float = ContextSettings.model_fields["content_confidence"].default
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
    "neighbours_continuing",
    "wording_logistic_cue",
)
EMBEDDING_CUE = FEATURES.index("embedding_cue")
NEIGHBOURS_CONTINUING = FEATURES.index("neighbours_continuing")
WORDING_LOGISTIC_CUE = FEATURES.index("wording_logistic_cue")
NEIGHBOURS = 10  # chosen by cross-validation by writer (5 and 25 read worse)
NEIGHBOUR_SHARPNESS = 20.0  # a neighbour's vote weighs exp(sharpness * similarity)
NEVER_BEHIND = -math.inf  # a behind_offset that never goes back past a reaction
BATCH_ROWS = 1024  # similarities computed this many turns at a time (memory, when fitting)


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
    # The task a chatter turn reacted to ("thanks!", "lol" after a request), still open for the
    # speaker's next turn: "wait, why does it print a blank line after each one?" goes on with it.
    task_behind: PreviousTurn | None = field(default=None, compare=False, repr=False)
    # How sure routing was of `category` (its decision's confidence): a task read at 0.5 carries
    # half as often. Chatter misread as a task does not hold the speaker's next turns to it.
    confidence: float = 1.0
    # The sender's own words when `text` holds more (a reply read with the quote under them);
    # None: `text` is all their own. An erasure cuts the turn back to them.
    own_words: str | None = field(default=None, compare=False)


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
    neighbours_continuing: float = 0.0
    logistic_cue: float = 0.0


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


@dataclass(frozen=True)
class WordingLogistic:
    """Logistic weights over the turn's hashed n-grams (`ngram_buckets`): the log-odds that it
    continues, read from its wording; a second block reads the same n-grams again when the
    previous message is a task. Fit together, it and the naive Bayes cue beside it read better
    than either alone (cross-validated by writer)."""

    weights: np.ndarray  # per bucket: any turn's, then again after a task
    bias: float

    def score(self, grams: np.ndarray, after_task: bool) -> float:
        """`grams`: the turn's `ngram_buckets`."""
        buckets_count = len(self.weights) // 2
        buckets = grams % buckets_count
        total = float(self.weights[buckets].sum())
        if after_task:
            total += float(self.weights[buckets_count + buckets].sum())
        return total / math.sqrt(len(buckets)) + self.bias


class FollowUpNeighbours:
    """The training follow-ups' vectors, whether each continued its task, and whether the turn
    before it was a task (not chatter). A turn's nearest follow-ups after the same kind of turn
    vote on whether it continues: a read of the vector that is not linear, as the embedding
    cue's is (after a task, "lol" and "brb" sit among turns that ended it, "why?" among turns
    that went on with it)."""

    def __init__(
        self, vectors: np.ndarray, continues: np.ndarray, after_task: np.ndarray, embedder_id: str
    ) -> None:
        self.embedder_id = embedder_id
        self.dim = vectors.shape[1]
        # Per kind of turn before (chatter, task): its follow-ups' vectors as columns and their
        # votes, split once here, not at every turn (a copy of thousands of vectors a message),
        # and kept only so (the vectors as given are not held twice).
        self._by_kind = {
            kind: (
                np.ascontiguousarray(vectors[after_task == kind].T),
                continues[after_task == kind].astype(np.float32),
            )
            for kind in (False, True)
        }

    def fits(self, dim: int) -> bool:
        return self.dim == dim

    def stored(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The follow-ups' vectors, whether each continued, and whether a task came before it:
        grouped by that kind (the vote does not depend on their order)."""
        parts = list(self._by_kind.items())
        vectors = np.concatenate([columns.T for _, (columns, _) in parts])
        continues = np.concatenate([votes > 0.5 for _, (_, votes) in parts])
        after_task = np.concatenate([np.full(len(votes), kind) for kind, (_, votes) in parts])
        return vectors, continues, after_task

    def share_continuing(self, vectors: np.ndarray, after_task: np.ndarray) -> np.ndarray:
        """Per row of `vectors` (turns; `after_task` per turn), the similarity-weighted share of
        its nearest follow-ups (after the same kind of turn) that continued; NaN with none."""
        share = np.full(len(vectors), np.nan)
        for kind, (pool_vectors, pool_continues) in self._by_kind.items():
            rows = np.flatnonzero(after_task == kind)
            if not pool_continues.size:
                continue
            k = min(NEIGHBOURS, pool_continues.size)
            for start in range(0, len(rows), BATCH_ROWS):
                batch = rows[start : start + BATCH_ROWS]
                similarity = vectors[batch] @ pool_vectors
                nearest = np.argpartition(-similarity, k - 1, axis=1)[:, :k]
                nearest_similarity = np.take_along_axis(similarity, nearest, axis=1)
                votes = np.exp(
                    NEIGHBOUR_SHARPNESS
                    * (nearest_similarity - nearest_similarity.max(axis=1, keepdims=True))
                )
                continued = (votes * pool_continues[nearest]).sum(axis=1)
                share[batch] = continued / votes.sum(axis=1)
        return share


def with_pairs(z: np.ndarray) -> np.ndarray:
    """Standardized features followed by the product of every pair of them (last axis): how
    much one feature says can depend on another (a short turn after a request, not after a
    question that was answered)."""
    i, j = np.triu_indices(z.shape[-1], 1)
    return np.concatenate([z, z[..., i] * z[..., j]], axis=-1)


class ContinuityModel:
    """Weights over standardized features (and, when `pairs`, their pairwise products), the
    wording cues (naive Bayes log-odds and logistic weights by n-gram bucket), the embedding
    cue and the follow-ups whose neighbours vote."""

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
        neighbours: FollowUpNeighbours | None = None,
        behind_offset: float = NEVER_BEHIND,
        wording_logistic: WordingLogistic | None = None,
    ) -> None:
        self.taxonomy = taxonomy
        self.weights, self.bias, self.mean, self.scale = weights, bias, mean, scale
        # Added to the log-odds that a turn goes back to the task behind a reaction (the
        # model is fit on turns and their own context; after "thanks!" a return is rarer).
        self.behind_offset = behind_offset
        self.pairs = pairs
        self.cue = cue
        self.embedding = embedding
        self.neighbours = neighbours
        self.wording_logistic = wording_logistic
        self._tier_of = np.array([TIERS.index(taxonomy.tier_of(c)) for c in taxonomy.categories])
        self._casual = taxonomy.categories.index(CHATTER) if CHATTER in taxonomy.categories else -1

    @classmethod
    def load(
        cls, taxonomy: Taxonomy, embedder_id: str | None, data: bytes | None = None
    ) -> ContinuityModel:
        """The shipped model; its embedding cue and neighbours only for the embedder it was fit
        with."""
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
            wording_weights = np.zeros(int(stored["wording_weights_count"]), np.float32)
            wording_weights[stored["wording_index"]] = stored["wording_value"]
            wording_logistic = WordingLogistic(wording_weights, float(stored["wording_bias"]))
            fit_with = str(stored["embedder_id"])
            embedding: EmbeddingCue | None = None
            neighbours: FollowUpNeighbours | None = None
            if fit_with == embedder_id:
                embedding = EmbeddingCue(
                    stored["embedding_weights"], float(stored["embedding_bias"]), fit_with
                )
                neighbours = FollowUpNeighbours(
                    stored["neighbour_vectors"].astype(np.float32),
                    stored["neighbour_continues"].astype(bool),
                    stored["neighbour_after_task"].astype(bool),
                    fit_with,
                )
            else:  # not read at all: another embedder's vectors mean nothing to them
                log.info(
                    "the continuity model's embedding cue and neighbours were fit on %s, not %s:"
                    " left out",
                    fit_with,
                    embedder_id,
                )
            return cls(
                taxonomy,
                stored["weights"],
                float(stored["bias"]),
                stored["mean"],
                stored["scale"],
                cue,
                embedding,
                bool(stored["pairs"]) if "pairs" in stored.files else False,
                neighbours,
                float(stored["behind_offset"]) if "behind_offset" in stored.files else NEVER_BEHIND,
                wording_logistic,
            )

    def dump(self) -> bytes:
        assert self.cue is not None and self.embedding is not None
        assert self.neighbours is not None and self.wording_logistic is not None
        nonzero = np.flatnonzero(self.cue)
        wording = self.wording_logistic.weights
        wording_nonzero = np.flatnonzero(wording)
        vectors, continues, after_task = self.neighbours.stored()
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
            wording_weights_count=np.array(len(wording)),
            wording_index=wording_nonzero.astype(np.int32),
            wording_value=wording[wording_nonzero].astype(np.float32),
            wording_bias=np.array(self.wording_logistic.bias),
            embedding_weights=self.embedding.weights.astype(np.float32),
            embedding_bias=np.array(self.embedding.bias),
            embedder_id=np.array(self.embedding.embedder_id),
            neighbour_vectors=vectors.astype(np.float16),
            neighbour_continues=continues,
            neighbour_after_task=after_task,
            features=np.array(FEATURES),
            pairs=np.array(self.pairs),
            behind_offset=np.array(self.behind_offset),
        )
        return buffer.getvalue()

    def wording_cues(self, text: str, previous_index: int) -> tuple[float, float]:
        """The naive Bayes and the logistic wording cues, from one read of the turn's n-grams;
        without the logistic weights, that feature's training mean (it then moves nothing)."""
        grams = ngram_buckets(text)
        bayes = 0.0
        if self.cue is not None:
            buckets = grams % len(self.cue)
            bayes = float(self.cue[buckets].sum() / math.sqrt(len(buckets)))
        if self.wording_logistic is None:
            return bayes, float(self.mean[WORDING_LOGISTIC_CUE])
        return bayes, self.wording_logistic.score(grams, previous_index != self._casual)

    def embedding_cue(
        self, vector: np.ndarray, previous_vector: np.ndarray, previous_index: int
    ) -> float:
        """Without a cue for this embedder, the feature's training mean: it then moves nothing."""
        if self.embedding is None or not self.embedding.fits(len(vector)):
            return float(self.mean[EMBEDDING_CUE])
        return self.embedding.score(vector, previous_vector, previous_index != self._casual)

    def neighbours_continuing(self, vector: np.ndarray, previous_index: int) -> float:
        """Without neighbours for this embedder, the feature's training mean: it then moves
        nothing."""
        if self.neighbours is None or not self.neighbours.fits(len(vector)):
            return float(self.mean[NEIGHBOURS_CONTINUING])
        after_task = np.array([previous_index != self._casual])
        share = self.neighbours.share_continuing(vector[None, :], after_task)[0]
        return float(self.mean[NEIGHBOURS_CONTINUING]) if np.isnan(share) else float(share)

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
                turn.neighbours_continuing,
                turn.logistic_cue,
            ]
        )

    def p_continue(self, turn: TurnFeatures, behind: bool = False) -> float:
        """The chance that the turn continues its context's task; `behind`: the task behind
        the reaction that is its context."""
        z = (self.vector(turn) - self.mean) / self.scale
        if self.pairs:
            z = with_pairs(z)
        logit = float(z @ self.weights + self.bias) + (self.behind_offset if behind else 0.0)
        return 1.0 / (1.0 + math.exp(-max(logit, -700.0)))


def carry(alone: np.ndarray, previous_index: int, p_continue: float) -> np.ndarray:
    """The turn's category probabilities: the previous task with the chance it continues, else
    what the message says alone."""
    carried = (1.0 - p_continue) * alone
    carried[previous_index] += p_continue
    return carried


def carries(category: str | None, taxonomy: Taxonomy) -> bool:
    """`unknown` (and anything the taxonomy lacks) is never carried to the next turn."""
    return category is not None and category != UNKNOWN and category in taxonomy.categories


def left_open(category: str, context: PreviousTurn | None) -> PreviousTurn | None:
    """The task a turn of `category`, routed in `context`, leaves open behind it: a chatter
    turn after a task (a reaction to the answer) leaves that task open, as does chatter after
    such chatter; a task leaves none (it is the context itself)."""
    if category != CHATTER or context is None:
        return None
    if context.category == CHATTER:
        return context.task_behind
    return replace(context, task_behind=None) if context.category != UNKNOWN else None


def tasks_read_against(context: PreviousTurn, behind: PreviousTurn | None) -> tuple[str, ...]:
    """The tasks a turn read in `context` (and against `behind`, the task behind a reaction)
    could have gone on with: chatter is none."""
    return tuple(
        turn.category for turn in (context, behind) if turn is not None and turn.category != CHATTER
    )


def says_alone(alone: LocalAnswer | None, category: str, clear: float) -> bool:
    """Whether the message read `alone` names `category` with at least `clear` confidence."""
    return alone is not None and alone.category == category and alone.confidence >= clear


def named_by_context(
    category: str, context: PreviousTurn | None, alone: LocalAnswer | None, clear: float
) -> bool:
    """Whether a label given with `context` may be the context's, not the message's: it names
    the task the context holds (or the one behind the reaction that is the context), and the
    message read `alone` does not name it with at least `clear` confidence ("why?" is coding
    after a coding request and nothing alone; a second coding request says so itself). Chatter
    is chatter alone."""
    if category == CHATTER or context is None or says_alone(alone, category, clear):
        return False
    behind = context.task_behind
    return category == context.category or (behind is not None and category == behind.category)


def routed_turn(
    category: str,
    at: float | None,
    text: str,
    context: PreviousTurn | None,
    confidence: float | None = None,
    own_words: str | None = None,
) -> PreviousTurn:
    """A turn routed as `category` (with `confidence`) in `context`, as the next turn's context:
    with the task it leaves open behind it. A turn that stays on a clearly named task (its
    context's, or the one behind it) is at least as sure of it as that reading: "why?" carried
    at 0.5 after a request read at 0.97 leaves the task at 0.97, and a thread of follow-ups does
    not wear its task away. After a task read at 0.85 the turn keeps its own confidence.
    `own_words`: the sender's own, when `text` holds more (a reply read with its quote)."""
    sure = sure_share(confidence)
    for task in (context, context.task_behind if context is not None else None):
        if task is not None and task.category == category and task.confidence >= CLEAR_TASK:
            sure = max(sure, task.confidence)
    return PreviousTurn(
        category,
        at,
        text,
        task_behind=left_open(category, context),
        confidence=sure,
        own_words=own_words,
    )


def sure_share(confidence: float | None) -> float:
    """A confidence as a share in [0, 1]; unknown (None, not a number) reads as sure."""
    if confidence is None or not math.isfinite(confidence):
        return 1.0
    return min(max(float(confidence), 0.0), 1.0)


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
