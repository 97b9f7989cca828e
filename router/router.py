"""ModelRouter: names a message's task (LLM, local signal, context prior), derives its tier and
model, never raises for a failing signal, and writes every decision to the routing log."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter, OrderedDict
from collections.abc import Sequence
from typing import Any

import aiosqlite
import numpy as np

from router import routing_log
from router.config import RouterConfig, Secrets
from router.db import ROUTER_MIGRATIONS, connect, migrate
from router.decision import RoutingDecision, SignalAnswer
from router.decision_builder import DecisionBuilder
from router.embedder import Embedder, build_embedder
from router.pool import Pool, PoolEntry
from router.seed import ProgressCallback, seed_pool
from router.signals.categorizer import CategorizerError, LLMCategorizer
from router.signals.context import PreviousTurn, apply_prior, prior_strength
from router.signals.local import LocalResult, SoftmaxHead, blend, decide, knn_vote
from router.stored_taxonomy import check_taxonomy_matches_store
from router.taxonomy import MODES, Taxonomy

log = logging.getLogger(__name__)

MODE_KEY = "routing_mode"
MODE_RECHECK_S = 2.0  # another process (bot or proxy) sharing the database may change the mode
PRIOR_CACHE_SIZE = 10_000  # conversations whose last turn is kept in memory (older: from the log)
PRIOR_TEXT_CHARS = 300
REFIT_GROWTH = 1.05  # refit the head once the pool has grown by 5%


class EmptyMessageError(ValueError):
    """Raised for empty or whitespace-only text: there is nothing to route."""


class ModelRouter:
    """One per process; safe to share between conversations (CPU work runs in threads)."""

    def __init__(
        self,
        config: RouterConfig,
        conn: aiosqlite.Connection,
        embedder: Embedder | None,
        pool: Pool | None,
        categorizer: LLMCategorizer | None,
        categorizer_missing: str | None,
        mode: str,
        mode_override: str | None = None,
    ) -> None:
        self.config = config
        self.taxonomy: Taxonomy = config.build_taxonomy()
        self.conn = conn
        self.embedder = embedder
        self.pool = pool
        self.categorizer = categorizer
        self.categorizer_missing = categorizer_missing
        self._stored_mode = mode
        self.mode_override = mode_override
        self.head = SoftmaxHead(self.taxonomy.categories)
        self._refit_task: asyncio.Task[None] | None = None
        self._previous: OrderedDict[str, PreviousTurn] = OrderedDict()
        self._mode_checked_at = time.monotonic()
        self.counters: Counter[str] = Counter()
        self.decisions = DecisionBuilder(config, self.taxonomy)

    # -- lifecycle -----------------------------------------------------------------------------

    @classmethod
    async def open(
        cls,
        config: RouterConfig,
        secrets: Secrets | None = None,
        *,
        embedder: Embedder | None = None,
        mode_override: str | None = None,
        progress: ProgressCallback | None = None,
    ) -> ModelRouter:
        secrets = secrets or Secrets()
        conn = await connect(config.database.path)
        try:
            await migrate(conn, "router", ROUTER_MIGRATIONS)
            taxonomy = config.build_taxonomy()
            await check_taxonomy_matches_store(conn, taxonomy)
            stored = await routing_log.get_setting(conn, MODE_KEY)
            if stored not in MODES:
                stored = config.routing.mode
                await routing_log.set_setting(conn, MODE_KEY, stored)
            pool = None
            if config.local.enabled:
                embedder = embedder or await asyncio.to_thread(build_embedder, config.embedding)
                pool = Pool(conn, embedder.id, embedder.dim)
                if await pool.load() == 0 and config.pool.seed:
                    await seed_pool(pool, embedder, taxonomy, progress)
            else:
                embedder = None
            categorizer, missing = None, None
            if config.categorizer.enabled:
                if secrets.groq_api_key:
                    categorizer = LLMCategorizer(config.categorizer, taxonomy, secrets.groq_api_key)
                else:
                    missing = "GROQ_API_KEY is not set"
        except BaseException:
            await conn.close()
            raise
        router = cls(config, conn, embedder, pool, categorizer, missing, stored, mode_override)
        if pool is not None and len(pool):
            await asyncio.to_thread(router.head.fit, pool.vectors, pool.categories)
        return router

    async def close(self) -> None:
        if self._refit_task is not None:
            await self._refit_task
        if self.categorizer is not None:
            await self.categorizer.close()
        await self.conn.close()

    # -- mode ----------------------------------------------------------------------------------

    @property
    def mode(self) -> str:
        return self.mode_override or self._stored_mode

    @property
    def stored_mode(self) -> str:
        return self._stored_mode

    async def refresh_mode(self, max_age_s: float | None = None) -> str:
        """Re-read the stored mode when the last read is older than `max_age_s`; return the mode."""
        max_age_s = MODE_RECHECK_S if max_age_s is None else max_age_s
        if time.monotonic() - self._mode_checked_at >= max_age_s:
            self._mode_checked_at = time.monotonic()
            try:
                stored = await routing_log.get_setting(self.conn, MODE_KEY)
            except aiosqlite.Error:
                log.exception("could not read the stored routing mode")
                self.counters["db_errors"] += 1
                stored = None
            if stored in MODES and stored != self._stored_mode:
                log.info("routing mode is now %s (changed by another process)", stored)
                self._stored_mode = stored
        return self.mode

    async def set_mode(self, mode: str) -> str:
        """Store a new mode for every conversation; return the old one."""
        if mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}")
        old = self._stored_mode
        await routing_log.set_setting(self.conn, MODE_KEY, mode)
        self._stored_mode = mode
        self._mode_checked_at = time.monotonic()
        log.info("routing mode changed from %s to %s", old, mode)
        return old

    @property
    def pool_size(self) -> int:
        return len(self.pool) if self.pool is not None else 0

    @property
    def routes_locally(self) -> bool:
        """False when the bot hands routing to an upstream proxy (no categorizer, no pool)."""
        return self.pool is not None or self.config.categorizer.enabled

    # -- routing -------------------------------------------------------------------------------

    async def route(
        self,
        text: str,
        history: Sequence[dict[str, Any]] | None = None,
        conv_key: str | None = None,
        at: float | None = None,
    ) -> RoutingDecision:
        """Decide the tier and model for `text`; raises only EmptyMessageError.

        `history` is accepted for callers that hold one; the prior comes from the routing log."""
        if not text or not text.strip():
            raise EmptyMessageError("the message is empty")
        started = time.perf_counter()
        now = time.time() if at is None else at
        mode = await self.refresh_mode()
        previous = await self._previous_turn(conv_key)
        if mode == "off":
            decision = self.decisions.default_tier(mode, "fixed")
        elif mode == "shadow":
            decision = await self._route_shadow(text, previous, now)
        else:
            decision = await self._route_live(text, previous, now)
        decision.latency_ms = (time.perf_counter() - started) * 1000
        await self._log(decision, text, conv_key, now)
        return decision

    async def _route_shadow(
        self, text: str, previous: PreviousTurn | None, now: float
    ) -> RoutingDecision:
        local_task = asyncio.create_task(self._local(text, previous, now))
        llm_result = await self._ask_llm(text, previous, now)
        local = await local_task
        if isinstance(llm_result, SignalAnswer):
            decision = self.decisions.from_llm(llm_result, "shadow", local)
            await self._learn(text, local, llm_result)
            return decision
        return self._fall_back("shadow", local, llm_result)

    async def _route_live(
        self, text: str, previous: PreviousTurn | None, now: float
    ) -> RoutingDecision:
        local = await self._local(text, previous, now)
        answer = local.answer if local else None
        if answer is not None and answer.confidence >= self.config.local.min_confidence:
            return self.decisions.from_local(answer, local, "live", previous)
        llm_result = await self._ask_llm(text, previous, now)
        if isinstance(llm_result, SignalAnswer):
            decision = self.decisions.from_llm(llm_result, "live", local)
            await self._learn(text, local, llm_result)
            return decision
        return self._fall_back("live", local, llm_result)

    # -- signals -------------------------------------------------------------------------------

    async def _local(
        self, text: str, previous: PreviousTurn | None, now: float
    ) -> LocalResult | None:
        if self.embedder is None or self.pool is None:
            return None
        strength = 0.0
        previous_index = -1
        if previous is not None and previous.category in self.taxonomy.categories:
            strength = prior_strength(self.config.context, now - previous.at, text)
            previous_index = self.taxonomy.categories.index(previous.category)
        started = time.perf_counter()
        try:
            vector = await self.embedder.aembed_message(text)
            return self._local_answer(vector, strength, previous_index, started)
        except Exception:  # a broken embedder degrades routing, it does not stop it
            log.exception("local signal failed")
            self.counters["local_errors"] += 1
            return None

    def _local_answer(
        self, vector: np.ndarray, strength: float, previous_index: int, started: float
    ) -> LocalResult:
        """Search, classify and decide on the event loop: about 1 ms, not worth a thread hop."""
        assert self.pool is not None
        if len(self.pool) < self.config.local.min_pool_size:
            return LocalResult(vector, None, None, (time.perf_counter() - started) * 1000)
        settings = self.config.local
        neighbours = self.pool.search(vector, settings.k)
        head = self.head.predict(vector) if self.head.ready else None
        probs = blend(head, knn_vote(neighbours, self.taxonomy.categories), settings.classifier)
        unprimed = decide(probs, self.taxonomy, settings.downgrade_cost, neighbours)
        answer = unprimed
        if strength > 0.0:
            primed = apply_prior(probs, previous_index, strength)
            answer = decide(primed, self.taxonomy, settings.downgrade_cost, neighbours)
        return LocalResult(vector, answer, unprimed, (time.perf_counter() - started) * 1000)

    async def _ask_llm(
        self, text: str, previous: PreviousTurn | None, now: float
    ) -> SignalAnswer | str:
        """The categorizer's answer, or the reason it gave none."""
        if self.categorizer is None:
            return f"categorizer unavailable: {self.categorizer_missing or 'disabled in config'}"
        try:
            result = await self.categorizer.categorize(text, previous, now)
        except CategorizerError as exc:
            self.counters["categorizer_errors"] += 1
            log.warning("categorizer failed: %s", exc.reason)
            return f"categorizer: {exc.reason}"
        except Exception as exc:  # an SDK surprise must not reach the chat
            self.counters["categorizer_errors"] += 1
            log.exception("categorizer failed unexpectedly")
            return f"categorizer: {type(exc).__name__}"
        tier = self.taxonomy.tier_of(result.category)
        return SignalAnswer(result.category, tier, result.confidence, result.latency_ms)

    def _fall_back(self, mode: str, local: LocalResult | None, error: str) -> RoutingDecision:
        self.counters["fallbacks"] += 1
        return self.decisions.fall_back(mode, local, error)

    # -- learning and logging ------------------------------------------------------------------

    async def _learn(self, text: str, local: LocalResult | None, llm: SignalAnswer) -> None:
        """The categorizer labels the pool: confident, new and not near-duplicate labels only."""
        if local is None or self.pool is None:
            return
        if llm.confidence < self.config.pool.min_llm_confidence or self.pool.contains_text(text):
            return
        nearest = self.pool.search(local.vector, 1)
        if nearest and nearest[0].similarity >= self.config.pool.near_duplicate_cosine:
            return
        entry = PoolEntry(text, llm.category, local.vector, "llm", llm.confidence)
        try:
            await self.pool.add_many([entry])
        except aiosqlite.Error:
            log.exception("could not add to the pool")
            self.counters["db_errors"] += 1
            return
        if len(self.pool) >= self.head.trained_on * REFIT_GROWTH and self._refit_task is None:
            self._refit_task = asyncio.create_task(self._refit())

    async def _refit(self) -> None:
        assert self.pool is not None
        head = SoftmaxHead(self.taxonomy.categories)
        try:
            await asyncio.to_thread(head.fit, self.pool.vectors.copy(), list(self.pool.categories))
            self.head = head
        finally:
            self._refit_task = None

    async def _previous_turn(self, conv_key: str | None) -> PreviousTurn | None:
        if conv_key is None:
            return None
        if conv_key in self._previous:
            self._previous.move_to_end(conv_key)
        else:
            try:
                turn = await routing_log.last_turn(self.conn, conv_key)
            except aiosqlite.Error:
                log.exception("could not read the conversation's last decision")
                self.counters["db_errors"] += 1
                return None
            if turn is None:
                return None
            self._remember(conv_key, turn)
        return self._previous[conv_key]

    def _remember(self, conv_key: str, turn: PreviousTurn) -> None:
        """Keep the last turn of the most recent conversations; the rest are read back on demand."""
        kept = PreviousTurn(turn.category, turn.at, turn.text[:PRIOR_TEXT_CHARS])
        self._previous[conv_key] = kept
        self._previous.move_to_end(conv_key)
        while len(self._previous) > PRIOR_CACHE_SIZE:
            self._previous.popitem(last=False)

    async def _log(
        self, decision: RoutingDecision, text: str, conv_key: str | None, at: float
    ) -> None:
        if conv_key is not None and decision.category is not None:
            self._remember(conv_key, PreviousTurn(decision.category, at, text))
        if decision.source == "fallback":
            log.info("routing fell back to %s: %s", decision.tier, decision.error)
        try:
            decision.log_id = await routing_log.write_decision(
                self.conn, decision, text, conv_key, at
            )
        except aiosqlite.Error:
            log.exception("could not write the routing log")
            self.counters["db_errors"] += 1

    async def record_usage(
        self, decision: RoutingDecision, prompt_tokens: int, completion_tokens: int
    ) -> None:
        if decision.log_id is None:
            return
        try:
            await routing_log.record_usage(
                self.conn, decision.log_id, prompt_tokens, completion_tokens
            )
        except aiosqlite.Error:
            log.exception("could not record token usage")
            self.counters["db_errors"] += 1
