"""The local signal: embeds a message once, classifies it alone (calibrated), and carries the
previous turn's task when the continuity model says the turn continues it."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TypeGuard

import numpy as np

from router.config import RouterConfig
from router.embedding.embedder import Embedder
from router.pool.pool import Neighbour, Pool, PoolSnapshot
from router.signals.calibration import Calibration
from router.signals.classifier import LocalClassifier, LocalResult, blend, decide, knn_vote
from router.signals.continuity import (
    NEVER_BEHIND,
    ContinuityModel,
    PreviousTurn,
    TurnFeatures,
    carries,
    carry,
    content_first,
    routed_turn,
    tasks_read_against,
)
from router.store.fitted_state import fingerprint as fitted_state_fingerprint
from router.taxonomy import Taxonomy


@dataclass(frozen=True)
class Reading:
    """One message read alone: its vector, its nearest pooled messages and its calibrated
    category probabilities (less sure the further it is from them)."""

    text: str
    vector: np.ndarray
    alone: np.ndarray
    neighbours: list[Neighbour]


class LocalSignal:
    """Owns the classifier over the pool and the continuity model; stateless per message."""

    def __init__(
        self,
        config: RouterConfig,
        taxonomy: Taxonomy,
        embedder: Embedder,
        pool: Pool,
        continuity: ContinuityModel | None,
    ) -> None:
        self.config = config
        self.taxonomy = taxonomy
        self.embedder = embedder
        self.pool = pool
        self.continuity = continuity
        self.classifier = LocalClassifier(taxonomy.categories)

    @property
    def ready(self) -> bool:
        return len(self.pool) >= self.config.local.min_pool_size and self.classifier.ready

    def fingerprint(self, calibration: Calibration, snapshot: PoolSnapshot | None = None) -> str:
        """What a classifier fit on `snapshot` (the pool as it is now), with `calibration`,
        depends on."""
        rows = snapshot or self.pool.snapshot()
        return fitted_state_fingerprint(
            self.embedder.id, rows.texts, rows.categories, self.taxonomy.categories, calibration
        )

    def fit(
        self, calibration: Calibration | None = None, snapshot: PoolSnapshot | None = None
    ) -> LocalClassifier:
        """A classifier fit on `snapshot` (the pool as it is now); run it in a thread."""
        rows = snapshot or self.pool.snapshot()
        classifier = LocalClassifier(self.taxonomy.categories)
        classifier.fit(rows.vectors, rows.texts, rows.categories, calibration)
        return classifier

    async def read(self, text: str) -> Reading:
        vector = await self.embedder.aembed_message(text)
        neighbours = self.pool.search(vector, self.config.local.k)
        return Reading(text, vector, self._alone(vector, text, neighbours), neighbours)

    def _alone(self, vector: np.ndarray, text: str, neighbours: list[Neighbour]) -> np.ndarray:
        settings = self.config.local
        nearest = neighbours[0].similarity if neighbours else None
        head = self.classifier.probs(vector, text, nearest) if self.classifier.ready else None
        if settings.classifier == "head" and head is not None:
            return head
        votes = knn_vote(neighbours, self.taxonomy.categories)
        return blend(head, votes, settings.classifier)

    async def p_continue(
        self, reading: Reading, previous: PreviousTurn, now: float, behind: bool = False
    ) -> float:
        """The chance that the turn read goes on with `previous`'s task (`behind`: the task
        behind the reaction that is the turn's context)."""
        assert self.continuity is not None
        previous_vector = (
            previous.vector
            if previous.vector is not None
            else await self.embedder.aembed_message(previous.text)
        )
        index = self._index(previous)
        bayes_cue, logistic_cue = self.continuity.wording_cues(reading.text, index)
        turn = TurnFeatures(
            tokens=self.embedder.token_count(reading.text),
            similarity=float(reading.vector @ previous_vector),
            gap_s=None if previous.at is None else now - previous.at,
            alone=reading.alone,
            previous_index=index,
            cue=bayes_cue,
            logistic_cue=logistic_cue,
            embedding_cue=self.continuity.embedding_cue(reading.vector, previous_vector, index),
            another_speaker=previous.another_speaker,
            neighbours_continuing=self.continuity.neighbours_continuing(reading.vector, index),
        )
        return self.continuity.p_continue(turn, behind)

    async def answer(self, text: str, previous: PreviousTurn | None, now: float) -> LocalResult:
        """The message's answer alone and in its conversation (the same when nothing carries)."""
        started = time.perf_counter()
        reading = await self.read(text)
        if not self.ready:
            return LocalResult(reading.vector, None, None, (time.perf_counter() - started) * 1000)
        neighbours = reading.neighbours
        cost = self.config.local.downgrade_cost
        alone = decide(reading.alone, self.taxonomy, cost, neighbours)
        answer, p_continue = alone, None
        read_against: tuple[str, ...] = ()
        if self._can_carry(previous):
            p_continue = await self.p_continue(reading, previous, now)
            # The turn carries the previous task as far as it goes on with it and as far as
            # that turn was that task (routing's confidence in it): chatter misread as a task
            # does not hold the speaker's next turns to it.
            probs = carry(reading.alone, self._index(previous), p_continue * previous.confidence)
            behind = previous.task_behind if self._goes_back(previous.task_behind) else None
            if behind is not None:
                # The task the chatter reacted to is still open: the turn may go on with it.
                p_back = await self.p_continue(reading, behind, now, behind=True)
                probs = carry(probs, self._index(behind), p_back * behind.confidence)
            carried = decide(probs, self.taxonomy, cost, neighbours)
            answer = content_first(alone, carried, self.config.context.content_confidence)
            read_against = tasks_read_against(previous, behind)
        elapsed = (time.perf_counter() - started) * 1000
        return LocalResult(reading.vector, answer, alone, elapsed, p_continue, read_against)

    def _goes_back(self, task: PreviousTurn | None) -> TypeGuard[PreviousTurn]:
        """Whether a turn may go back to `task`, the one behind a reaction."""
        assert self.continuity is not None
        return self._can_carry(task) and self.continuity.behind_offset > NEVER_BEHIND

    def _index(self, turn: PreviousTurn) -> int:
        return self.taxonomy.categories.index(turn.category)

    def _can_carry(self, previous: PreviousTurn | None) -> TypeGuard[PreviousTurn]:
        return (
            previous is not None
            and self.continuity is not None
            and self.config.context.enabled
            and carries(previous.category, self.taxonomy)
        )

    async def previous_from_history(self, texts: list[str], now: float) -> PreviousTurn | None:
        """The task of the last of `texts` (earlier user turns, oldest first, no times), each
        read in the context of the one before: what a stateless client's history implies."""
        previous: PreviousTurn | None = None
        for text in texts:
            result = await self.answer(text, previous, now)
            if result.answer is None:
                return None
            answer = result.answer
            previous = routed_turn(answer.category, None, text, previous, answer.confidence)
        return previous
