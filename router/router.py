"""ModelRouter: names a message's task (LLM, local signal, context prior), derives its tier and
model, never raises for a failing signal, and logs every decision once its request has ended."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import aiosqlite

from router.config import RouterConfig, Secrets
from router.counters import Counters
from router.decision import RoutingDecision, SignalAnswer
from router.decision_builder import DecisionBuilder
from router.embedding.blas import one_blas_thread_for_the_process
from router.embedding.embedder import Embedder, build_embedder
from router.pool.pool import Pool, PoolEntry, read_rows
from router.pool.seed import ProgressCallback, seed_pool
from router.signals.calibration import Calibration
from router.signals.categorizer import CategorizerError, LLMCategorizer
from router.signals.classifier import LocalResult
from router.signals.continuity import ContinuityModel, PreviousTurn
from router.signals.local_signal import LocalSignal
from router.store import fitted_state, routing_log, settings
from router.store.database import ROUTER_MIGRATIONS, connect, migrate
from router.store.log_writer import LogWriter
from router.store.open_decisions import DecisionLog
from router.store.taxonomy import check_taxonomy_matches_store
from router.taxonomy import MODES, Taxonomy
from router.text import earlier_user_texts, normalize_text

log = logging.getLogger(__name__)

MODE_KEY = "routing_mode"
CALIBRATION_KEY = "local_calibration"
MODE_RECHECK_S = 2.0  # another process (bot or proxy) sharing the database may change the mode
PRIOR_CACHE_SIZE = 10_000  # conversations whose last turn is kept in memory (older: from the log)
PRIOR_TEXT_CHARS = 300
REFIT_GROWTH = 1.05  # refit the head once the pool has grown by 5%


class EmptyMessageError(ValueError):
    """Raised for empty or whitespace-only text: there is nothing to route."""


async def _settle(*started: asyncio.Future[Any] | None) -> None:
    """A start that failed waits for the work it began; an embedder it built is closed (its
    thread with it)."""
    for future in started:
        if future is None:
            continue
        try:
            done = await asyncio.shield(future)
        except BaseException:  # its own failure, or this start cancelled: nothing to close
            continue
        if isinstance(done, Embedder):
            done.close()


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
        self.local = (
            LocalSignal(
                config,
                self.taxonomy,
                embedder,
                pool,
                ContinuityModel.load(self.taxonomy, embedder.id),
            )
            if embedder is not None and pool is not None
            else None
        )
        self._refit_task: asyncio.Task[None] | None = None
        self._previous: OrderedDict[str, PreviousTurn] = OrderedDict()
        self._mode_checked_at = time.monotonic()
        self.counters = Counters()
        self.decisions = DecisionBuilder(config, self.taxonomy)
        self.log = DecisionLog(
            LogWriter(config.database.path, routing_log.INSERT_SQL, self.counters)
        )
        # router.finish(decision, outcome, ...): the request behind a decision has ended.
        self.finish = self.log.finish

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
        first_texts: Sequence[str] = (),
    ) -> ModelRouter:
        """Open the database and the signals. `first_texts`, the messages the caller will route
        first (`crabbot route "..."`), are embedded on the embedder's thread while the pool and
        the classifier load, so the first decision finds them in the cache."""
        secrets = secrets or Secrets()
        # The model loads on the embedder's own thread (in C, without the GIL) while the
        # database is opened, migrated and checked and the pool's rows are read.
        loading, warming = None, None
        if config.local.enabled:
            one_blas_thread_for_the_process()
            if embedder is None:
                loading = asyncio.ensure_future(asyncio.to_thread(build_embedder, config.embedding))
        try:
            conn = await connect(config.database.path)
        except BaseException:
            await _settle(loading)
            raise
        try:
            await migrate(conn, "router", ROUTER_MIGRATIONS)
            taxonomy = config.build_taxonomy()
            await check_taxonomy_matches_store(conn, taxonomy)
            stored = await settings.get_setting(conn, MODE_KEY)
            if stored not in MODES:
                stored = config.routing.mode
                await settings.set_setting(conn, MODE_KEY, stored)
            pool, seeded = None, None
            if config.local.enabled:
                rows = None
                if loading is not None:
                    rows = await read_rows(conn)  # every embedder's: this one is not known yet
                    embedder = await loading
                assert embedder is not None
                if (mode_override or stored) != "off" and any(t.strip() for t in first_texts):
                    warming = asyncio.gather(
                        *(embedder.aembed_message(text) for text in first_texts if text.strip())
                    )
                pool = Pool(conn, embedder.id, embedder.dim)
                if await pool.load(rows) == 0 and config.pool.seed:
                    seeded = await seed_pool(pool, embedder, taxonomy, progress)
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
            await _settle(warming, loading)
            raise
        router = cls(config, conn, embedder, pool, categorizer, missing, stored, mode_override)
        in_memory = str(config.database.path) == ":memory:"
        await router.log.writer.start(conn if in_memory else None)
        try:
            interrupted = await routing_log.mark_interrupted(conn)
        except aiosqlite.Error:  # a locked file: the rows stay open; the router still starts
            log.exception("could not mark the requests open at the last stop as interrupted")
            router.counters["db_errors"] += 1
            interrupted = 0
        if interrupted:
            log.warning(
                "%d requests were open when crabbot last stopped: logged as interrupted",
                interrupted,
            )
        if router.local is not None and len(router.local.pool):
            kept = await router._stored_calibration()
            await router._load_or_fit(kept or seeded)
            if kept is None:
                await router._store_calibration()
        if warming is not None:
            try:
                await warming
            except Exception:  # the first route meets the same failure, and handles it
                log.debug("could not embed the first messages ahead", exc_info=True)
        return router

    async def close(self) -> None:
        if self._refit_task is not None:
            await self._refit_task
        if self.categorizer is not None:
            await self.categorizer.close()
        await self.log.close()
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
                stored = await settings.get_setting(self.conn, MODE_KEY)
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
        await settings.set_setting(self.conn, MODE_KEY, mode)
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

        The context is the previous user turns of `history` (OpenAI-style messages, the bot's
        memory or a proxy request's), else the conversation's last decision in the log."""
        if not text or not text.strip():
            raise EmptyMessageError("the message is empty")
        started = time.perf_counter()
        now = time.time() if at is None else at
        mode = await self.refresh_mode()
        previous = None if mode == "off" else await self._context(history, conv_key, now)
        if mode == "off":
            decision = self.decisions.default_tier(mode, "fixed")
        elif mode == "shadow":
            decision = await self._route_shadow(text, previous, now)
        else:
            decision = await self._route_live(text, previous, now)
        decision.latency_ms = (time.perf_counter() - started) * 1000
        self._open(decision, text, conv_key, now)
        return decision

    async def route_without_text(
        self,
        reason: str,
        conv_key: str | None = None,
        at: float | None = None,
        tier: str | None = None,
    ) -> RoutingDecision:
        """A request with nothing to read (an image alone, only a system prompt): `tier`, else
        the default tier, logged with the reason."""
        mode = await self.refresh_mode()
        decision = self.decisions.default_tier(mode, "fixed", reason, tier)
        self._open(decision, "", conv_key, time.time() if at is None else at)
        return decision

    def named(
        self, model: str, tier: str | None, source: str, text: str, conv_key: str | None = None
    ) -> RoutingDecision:
        """A request that named its model (a tier alias, or a provider model passed through):
        nothing to decide, but it is logged like a decision."""
        decision = self.decisions.named(self.mode, model, tier, source)
        self._open(decision, text, conv_key, time.time())
        return decision

    async def forget(self, conv_key: str, at: float | None = None) -> bool:
        """/reset: the conversation's routing context starts over. True when there was one."""
        had = await self._previous_turn(conv_key) is not None
        self._previous.pop(conv_key, None)
        try:
            await routing_log.reset_context(self.conn, conv_key, time.time() if at is None else at)
        except aiosqlite.Error:
            log.exception("could not store the conversation's reset")
            self.counters["db_errors"] += 1
        return had

    async def _route_shadow(
        self, text: str, previous: PreviousTurn | None, now: float
    ) -> RoutingDecision:
        if self.categorizer is None:
            return self._local_alone("shadow", await self._local(text, previous, now), previous)
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
        if self.categorizer is None:
            return self._local_alone("live", local, previous)
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
        if self.local is None:
            return None
        try:
            return await self.local.answer(text, previous, now)
        except Exception:  # a broken embedder degrades routing, it does not stop it
            log.exception("local signal failed")
            self.counters["local_errors"] += 1
            return None

    async def _context(
        self, history: Sequence[dict[str, Any]] | None, conv_key: str | None, now: float
    ) -> PreviousTurn | None:
        """The previous user turn and its task: the log's when it is the history's last user
        turn (it knows the time, and the LLM's label in shadow mode), else read from the
        history itself, else the log's alone."""
        logged = await self._previous_turn(conv_key)
        if not self.config.context.enabled:
            return None
        texts = earlier_user_texts(history, self.config.context.max_history_turns)
        if not texts:
            return logged
        if logged is not None and normalize_text(logged.text) == normalize_text(
            texts[-1][:PRIOR_TEXT_CHARS]
        ):
            return logged
        if self.local is None or not self.local.ready:
            return logged
        try:
            return await self.local.previous_from_history(texts, now)
        except Exception:
            log.exception("could not read the history's context")
            self.counters["local_errors"] += 1
            return logged

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

    def _local_alone(
        self, mode: str, local: LocalResult | None, previous: PreviousTurn | None
    ) -> RoutingDecision:
        """No categorizer configured (no key, or disabled): a stated configuration, not a
        failure. The local signal decides, and says so; nothing is counted as a fallback."""
        if local is None or local.answer is None:
            return self.decisions.default_tier(mode, "fixed")
        return self.decisions.from_local(local.answer, local, mode, previous)

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
        trained_on = self.local.classifier.trained_on if self.local else 0
        if len(self.pool) >= trained_on * REFIT_GROWTH and self._refit_task is None:
            self._refit_task = asyncio.create_task(self._refit())

    async def _refit(self) -> None:
        """Refit and recalibrate (cross-validated) on the grown pool, off the event loop."""
        assert self.local is not None
        try:
            self.local.classifier = await asyncio.to_thread(self.local.fit)
            await self._store_calibration()
            await self._store_fitted()
        finally:
            self._refit_task = None

    async def _load_or_fit(self, calibration: Calibration | None) -> None:
        """The classifier stored for this very pool and calibration, else a fresh fit (stored)."""
        assert self.local is not None
        if calibration is not None:
            wanted = self.local.fingerprint(calibration)
            try:
                loaded = await fitted_state.load(self.conn, wanted, self.taxonomy.categories)
            except (aiosqlite.Error, OSError, ValueError, KeyError):
                log.exception("could not read the stored classifier; fitting it again")
                loaded = None
            if loaded is not None:
                self.local.classifier = loaded
                return
        self.local.classifier = await asyncio.to_thread(self.local.fit, calibration)
        await self._store_fitted()

    async def _store_fitted(self) -> None:
        assert self.local is not None
        classifier = self.local.classifier
        if not classifier.ready:  # too little to fit yet: nothing worth keeping
            return
        try:
            key = self.local.fingerprint(classifier.calibration)
            await fitted_state.save(self.conn, key, classifier)
        except aiosqlite.Error:
            log.exception("could not store the fitted classifier")
            self.counters["db_errors"] += 1

    async def _stored_calibration(self) -> Calibration | None:
        """The last cross-validated calibration, when it was made for this embedder on a pool
        of about this size."""
        assert self.local is not None
        raw = await settings.get_setting(self.conn, CALIBRATION_KEY)
        try:
            stored = json.loads(raw) if raw else None
            if stored is None or stored["embedder_id"] != self.local.embedder.id:
                return None
            if len(self.local.pool) > stored["pool_size"] * REFIT_GROWTH:
                return None
            return Calibration(float(stored["head_scale"]), float(stored["ngram_scale"]))
        except (ValueError, KeyError, TypeError):
            return None

    async def _store_calibration(self) -> None:
        assert self.local is not None
        classifier = self.local.classifier
        value = {
            "embedder_id": self.local.embedder.id,
            "pool_size": classifier.trained_on,
            "head_scale": classifier.calibration.head_scale,
            "ngram_scale": classifier.calibration.ngram_scale,
        }
        try:
            await settings.set_setting(self.conn, CALIBRATION_KEY, json.dumps(value))
        except aiosqlite.Error:
            log.exception("could not store the calibration")
            self.counters["db_errors"] += 1

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

    def _open(self, decision: RoutingDecision, text: str, conv_key: str | None, at: float) -> None:
        decision.text, decision.conv_key, decision.at = text, conv_key, at
        if conv_key is not None and decision.category is not None:
            self._remember(conv_key, PreviousTurn(decision.category, at, text))
        if decision.source == "fallback":
            log.info("routing fell back to %s: %s", decision.tier, decision.error)
        self.log.open(decision)
