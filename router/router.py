"""ModelRouter: names a message's task (LLM, local signal, context prior), derives its tier and
model, never raises for a failing signal, and logs every decision once its request has ended."""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from router.config import RouterConfig
from router.context import PRIOR_TEXT_CHARS, ConversationContext
from router.counters import Counters
from router.decision import RoutingDecision, SignalAnswer, Source
from router.decision_builder import DecisionBuilder
from router.embedding.embedder import Embedder
from router.erasure_watch import ErasureWatch
from router.fitting import STOP_WAIT_S, ClassifierFitting
from router.pool.learning import QUARANTINE, LearningGate, LocalView
from router.pool.pool import Pool, PoolEntry, stored_hashes
from router.signals.categorizer import CategorizerError, LLMCategorizer
from router.signals.classifier import LocalResult
from router.signals.continuity import (
    ContinuityModel,
    PreviousTurn,
    named_by_context,
    routed_turn,
    within_horizon,
)
from router.signals.local_signal import LocalSignal
from router.store import erasure, routing_log
from router.store.database import Database, DatabaseError
from router.store.erasure import Erased, Scope
from router.store.erasure_notices import Notice, clear_old_notices
from router.store.log_writer import LogWriter
from router.store.open_decisions import DecisionLog
from router.store.retention import Retention
from router.store.settings import StoredMode
from router.store.write_behind import JobWriter
from router.taxonomy import TIERS, Mode, Taxonomy
from router.text import (
    answer_after,
    answer_to,
    answered_request,
    message_text,
    readable,
    remembered_words,
    user_message_of,
)

if TYPE_CHECKING:
    from router.cluster.shared_state import SharedState

log = logging.getLogger(__name__)

ERASE_FLUSH_S = 5.0  # an erasure waits this long for routing-log rows still being written
Origin = tuple[str | None, str | None]  # (conv_key, user_key) of the message a decision read


class EmptyMessageError(ValueError):
    """Raised for text with nothing to read (empty, whitespace, zero-width or control
    characters only): there is nothing to route."""


class ModelRouter:
    """One per process; safe to share between conversations (CPU work runs in threads)."""

    def __init__(
        self,
        config: RouterConfig,
        conn: Database,
        embedder: Embedder | None,
        pool: Pool | None,
        categorizer: LLMCategorizer | None,
        categorizer_missing: str | None,
        mode: Mode,
        mode_override: Mode | None = None,
    ) -> None:
        self.config = config
        self.taxonomy: Taxonomy = config.build_taxonomy()
        self.conn = conn
        self.embedder = embedder
        self.pool = pool
        self.categorizer = categorizer
        self.categorizer_missing = categorizer_missing
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
        self.counters = Counters()
        conn.count_in(self.counters)  # an SQLite file lost under the process (db_file_lost)
        self.stored_mode = StoredMode(conn, mode, self.counters)
        self.context = ConversationContext(config, conn, self.local, self.counters)
        self.fitting = (
            ClassifierFitting(conn, self.local, self.taxonomy, self.counters)
            if self.local is not None
            else None
        )
        self.decisions = DecisionBuilder(config, self.taxonomy)
        self.log = DecisionLog(
            LogWriter(routing_log.INSERT_SQL, self.counters),
            routing_log.PromptKeeping.of(config.privacy),
        )
        # router.finish(decision, outcome, ...): the request behind a decision has ended.
        self.finish = self.log.finish
        # [privacy] prompt_days: old prompt text is cleared in the background (started by
        # open_router).
        self.retention = Retention(self.counters)
        keep_s = config.privacy.prompt_days * 24 * 3600
        self.retention.add(
            "prompts cleared", lambda now: erasure.clear_old_prompts(conn, now - keep_s)
        )
        self.retention.add("erasure notices cleared", lambda now: clear_old_notices(conn, now))
        # Pool additions and quarantined labels are written behind the answer.
        self.pool_writer = JobWriter(self.counters, "pool", "pool")
        self.gate = LearningGate(config.pool)
        # With other processes on one PostgreSQL: what they share (set by open_router).
        self.shared: SharedState | None = None
        # Erasures other processes on the database made reach this one's memory.
        self.erasures = ErasureWatch(conn, self.context, self.counters, self._heed_erasures)

    # -- lifecycle -----------------------------------------------------------------------------

    async def close(self) -> None:
        gc.unfreeze()  # what open_router froze may be collected again
        if self.shared is not None:
            await self.shared.close()
        await self.retention.close()
        await self.erasures.close()
        if self.fitting is not None:
            await self.fitting.wait(STOP_WAIT_S)
        if self.categorizer is not None:
            await self.categorizer.close()
        await self.log.close()
        await self.pool_writer.close()
        await self.conn.close()

    # -- mode ----------------------------------------------------------------------------------

    @property
    def mode(self) -> Mode:
        return self.mode_override or self.stored_mode.value

    async def refresh_mode(self, max_age_s: float | None = None) -> Mode:
        """Re-read the stored mode when the last read is older than `max_age_s`; return the mode."""
        await self.stored_mode.refresh(max_age_s)
        return self.mode

    async def set_mode(self, mode: str) -> str:
        """Store a new mode for every conversation; return the old one."""
        return await self.stored_mode.set(mode)

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
        user_key: str | None = None,
        name: str | None = None,
        origin: str | None = None,
        replied_to: str | None = None,
        replied_author: str | None = None,
        replied_answer: bool | None = None,
    ) -> RoutingDecision:
        """Decide the tier and model for `text`; raises only EmptyMessageError.
        `origin` names who teaches the pool through this request (a proxy client key's label;
        by default the conversation), for the bounds of router/pool/learning.py.

        The context is the message `text` replies to (`replied_to`, its quoted text) when the
        router knows it (it routed it, or its vector is cached); else the speaker's previous
        user turns in `history` (OpenAI-style messages, the bot's memory or a proxy request's;
        `name` is how the speaker shows in their `name` fields), else the speaker's
        (`user_key`) last decision in the conversation's log. A reply to a message it does not
        know is read with the quote under its words (one embedding either way). A quote of the
        bot's answer (`replied_answer`; None: an answer in `history` that no user message there
        says) stands for the request that answer answered in `history`, whoever asked it (the
        reply talks to the bot about its answer); the request unknown, the speaker's previous
        turn is the context, never the quote. A reply to someone else's message weighs as such
        (rarely a request to go on with their task): who sent it is `replied_author` (as `name`
        names people) when the caller knows, else the speaker the router kept it under, else
        the name on it in `history`. A bare reply (nothing readable in `text`) asks about the
        message it replies to: that message is read as the request, after the speaker's previous
        turn; the log keeps no words for it (they are the quoted person's) and it teaches
        nothing."""
        replied_to = (replied_to or "").strip() or None
        # A bare reply (no words of its own) asks about the message it replies to.
        bare = not readable(text)
        if bare and not readable(replied_to or ""):  # empty, blanks, zero-width, control chars
            raise EmptyMessageError("the message is empty")
        started = time.perf_counter()
        now = time.time() if at is None else at
        mode = await self.refresh_mode()
        await self.erasures.check()
        asked = None if bare else self._answered(replied_to, history, replied_answer)
        if asked is not None:  # a reply to the bot's answer is about the request it answered
            replied_to = remembered_words(message_text(asked.get("content"))) or None
        elif replied_answer:  # an answer no longer in the history: nothing of the family's
            replied_to = None
        previous = None
        if replied_to and mode != "off" and not bare:
            previous = await self.context.replied(
                replied_to,
                conv_key,
                now,
                user_key,
                history,
                name,
                replied_author,
                asked is not None,
            )
        quoted_under = bool(replied_to) and previous is None and asked is None
        own_words = "" if bare else text
        if bare and replied_to is not None:
            text = replied_to
        elif quoted_under:
            text = f"{text.strip()}\n\n{replied_to}"
        # A task behind a reaction is kept only from the speaker's own turns (their previous
        # turn, or their request the quoted answer answered): another person's words in it
        # would outlive that person's erasure.
        own_context = previous is None or (asked is not None and asked.get("name") in (None, name))
        if previous is None and mode != "off":
            previous = await self.context.previous(history, conv_key, now, user_key, name)
            # Hours later the speaker's last turn is no context, for either signal (a quoted
            # message is: the reply names it).
            if not self._within_horizon(previous, now):
                previous = None
        if previous is not None and not self._within_horizon(previous.task_behind, now):
            previous = replace(previous, task_behind=None)  # nor the task behind a reaction
        # A reply read with the quote under its words teaches nothing: the pool holds what one
        # message says alone, and the quote may be another person's words, which would outlive
        # that person's erasure there.
        teacher = None if quoted_under else origin or conv_key or "anonymous"
        # What the bot answered the previous message, for the categorizer: whether the turn
        # questions that answer or only echoes it is often what tells a follow-up from chatter.
        answer = self._answer_to(previous, asked, history, name)
        whose = (conv_key, user_key)
        if mode == "off":
            decision = self.decisions.default_tier(mode, "fixed")
        elif mode == "shadow":
            decision = await self._route_shadow(text, previous, now, teacher, whose, answer)
        else:
            decision = await self._route_live(text, previous, now, teacher, whose, answer)
        decision.latency_ms = (time.perf_counter() - started) * 1000
        # The log keeps the sender's own words: a quote under them may be another person's,
        # whose erasure must reach every copy of their words.
        self._open(
            decision, own_words, conv_key, now, user_key, previous if own_context else None, text
        )
        return decision

    def _within_horizon(self, turn: PreviousTurn | None, now: float) -> bool:
        """Whether `turn` (None: no turn) is recent enough to be a context."""
        return turn is None or within_horizon(turn.at, now, self.config.context.horizon_h)

    @staticmethod
    def _answer_to(
        previous: PreviousTurn | None,
        asked: dict[str, Any] | None,
        history: Sequence[dict[str, Any]] | None,
        name: str | None,
    ) -> str | None:
        """The bot's answer to the turn's context in `history`: the answer the turn replies to,
        else the one to the previous turn (the speaker's own, unless it is someone else's)."""
        if asked is not None:
            index = next((i for i, m in enumerate(history or ()) if m is asked), None)
            return None if index is None else answer_after(history, index)
        if previous is None or not previous.text:
            return None
        own = None if previous.another_speaker else name
        return answer_to(previous.own_words or previous.text, history, PRIOR_TEXT_CHARS, own)

    @staticmethod
    def _answered(
        quoted: str | None, history: Sequence[dict[str, Any]] | None, answer: bool | None
    ) -> dict[str, Any] | None:
        """The request in `history` the quoted answer answered, when `quoted` is the bot's
        answer (`answer`; None: when no user message in `history` says it)."""
        if not quoted or answer is False:
            return None
        if answer is None and user_message_of(quoted, history, PRIOR_TEXT_CHARS) is not None:
            return None
        return answered_request(history, quoted)

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
        self,
        model: str,
        tier: str | None,
        source: Source,
        text: str,
        conv_key: str | None = None,
        user_key: str | None = None,
    ) -> RoutingDecision:
        """A request that named its model (a tier alias, or a provider model passed through):
        nothing to decide, but it is logged like a decision, with whose words it was."""
        decision = self.decisions.named(self.mode, model, tier, source)
        self._open(decision, text, conv_key, time.time(), user_key)
        return decision

    async def forget(self, conv_key: str, at: float | None = None) -> bool:
        """/reset: the conversation's routing context starts over. True when there was one."""
        return await self.context.forget(conv_key, at)

    async def erase(self, scope: Scope, dry_run: bool = False) -> Erased:
        """/forget, `crabbot forget` and a proxy's /admin/forget: the scope's prompt text leaves
        the routing log, the pool entries its messages taught leave the pool (and this process's
        memory, the classifier refit without them), its turns leave the context, and a notice
        tells the other processes on the database. `dry_run` only counts."""
        if not dry_run:
            self.forgetting(scope)
        await self.log.flush(ERASE_FLUSH_S)  # rows still queued are erased too
        await self.pool_writer.flush(ERASE_FLUSH_S)  # and pool entries still queued
        if dry_run:
            return await erasure.count(self.conn, scope)
        done = await erasure.erase(self.conn, scope)
        self.erasures.made(done.notice)
        self.context.drop(scope.conv_key, scope.user_key)
        self._forget_vectors()
        if self.shared is not None:  # and from the other processes' pools
            self.shared.unpool(done.pool_hashes)
        await self.unpool(done.pool_hashes)
        await self.conn.erase_traces()  # the erased text leaves the SQLite WAL too
        return done.erased

    def _forget_vectors(self) -> None:
        """An erasure empties the embedding cache: a cached message counts as one routing
        knows (a reply to it reads it as context), and the cache cannot tell whose it was."""
        if self.embedder is not None:
            self.embedder.clear_cache()

    def forgetting(self, scope: Scope) -> None:
        """An erasure of `scope` starts now: its requests asked by now and not yet done (still
        routed, answered or streamed) keep nothing of it: no context, pool entry or prompt."""
        self.log.forget(scope, time.time())

    async def unpool(self, hashes: set[str]) -> bool:
        """Let go of the pool entries with these text hashes (erased from the table) and refit
        without them; True when the pool held any."""
        if self.pool is None or not await self.pool.drop(hashes):
            return False
        if self.fitting is not None:
            self.fitting.refit()
        return True

    async def _heed_erasures(self, notices: list[Notice]) -> None:
        """Other processes erased these scopes: rows this process still had queued from before
        an erasure are erased too once written, and the pool lets go of the entries no longer
        stored (an entry added meanwhile stays)."""
        self._forget_vectors()
        pool = self.pool
        held = pool.hashes() if pool is not None else set()
        for notice in notices:  # requests asked before, not yet ended: what they keep
            self.log.forget(Scope(notice.conv_key, notice.user_key), notice.at)
        try:
            written = await self.log.flush(ERASE_FLUSH_S)
            written = await self.pool_writer.flush(ERASE_FLUSH_S) and written
            for notice in notices:
                scope = Scope(notice.conv_key, notice.user_key)
                await erasure.erase_rows(self.conn, scope, before=notice.at)
            stored = await stored_hashes(self.conn, pool.embedder_id) if pool else set()
        except DatabaseError:
            log.exception("could not apply another process's erasure to the stored rows")
            self.counters["db_errors"] += 1
            return
        if not written:  # still queued: erased once the next erasure or a restart reads them
            log.warning("rows still queued when another process's erasure was read")
            self.counters["erasure_rows_queued"] += 1
            return
        await self.unpool(held - stored)

    async def _route_shadow(
        self,
        text: str,
        previous: PreviousTurn | None,
        now: float,
        teacher: str | None,
        whose: Origin = (None, None),
        answer: str | None = None,
    ) -> RoutingDecision:
        if self.categorizer is None:
            return self._local_alone("shadow", await self._local(text, previous, now), previous)
        local_task = asyncio.create_task(self._local(text, previous, now))
        llm_result = await self._ask_llm(text, previous, now, answer)
        local = await local_task
        if isinstance(llm_result, SignalAnswer):
            decision = self.decisions.from_llm(llm_result, "shadow", local)
            await self._learn(text, local, llm_result, previous, now, teacher, whose)
            return decision
        return self._fall_back("shadow", local, llm_result)

    async def _route_live(
        self,
        text: str,
        previous: PreviousTurn | None,
        now: float,
        teacher: str | None,
        whose: Origin = (None, None),
        answer: str | None = None,
    ) -> RoutingDecision:
        local = await self._local(text, previous, now)
        if (
            local is not None
            and local.answer is not None
            and local.answer.confidence >= self.config.live_bar(local.context_decided)
        ):
            return self.decisions.from_local(local.answer, local, "live", previous)
        if self.categorizer is None:
            return self._local_alone("live", local, previous)
        llm_result = await self._ask_llm(text, previous, now, answer)
        if isinstance(llm_result, SignalAnswer):
            decision = self.decisions.from_llm(llm_result, "live", local)
            await self._learn(text, local, llm_result, previous, now, teacher, whose)
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

    async def _ask_llm(
        self, text: str, previous: PreviousTurn | None, now: float, answer: str | None = None
    ) -> SignalAnswer | str:
        """The categorizer's answer, or the reason it gave none."""
        if self.categorizer is None:
            return f"categorizer unavailable: {self.categorizer_missing or 'disabled in config'}"
        try:
            result = await self.categorizer.categorize(text, previous, now, answer)
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
        self, mode: Mode, local: LocalResult | None, previous: PreviousTurn | None
    ) -> RoutingDecision:
        """No categorizer configured (no key, or disabled): a stated configuration, not a
        failure. The local signal decides, and says so; nothing is counted as a fallback."""
        if local is None or local.answer is None:
            return self.decisions.default_tier(mode, "fixed")
        return self.decisions.from_local(local.answer, local, mode, previous)

    def _fall_back(self, mode: Mode, local: LocalResult | None, error: str) -> RoutingDecision:
        self.counters["fallbacks"] += 1
        return self.decisions.fall_back(mode, local, error)

    # -- learning and logging ------------------------------------------------------------------

    async def _learn(
        self,
        text: str,
        local: LocalResult | None,
        llm: SignalAnswer,
        previous: PreviousTurn | None,
        now: float,
        teacher: str | None,
        whose: Origin,
    ) -> None:
        """The categorizer labels the pool: confident, new and not near-duplicate labels only,
        within their teacher's bounds (else quarantined), each with whose message it was
        (erasable), written behind the answer; none when prompt text is not to be stored (the
        classifier's n-gram view needs the text), and none the conversation may have given;
        none without a `teacher` (a reply read with its quote), and none of a sender erased
        while their message was being routed."""
        if local is None or self.pool is None or not self.config.privacy.store_prompts:
            return
        if self.log.erasures.since(now, *whose):
            return
        if teacher is None:
            self.counters["pool_quoted_labels"] += 1
            return
        if llm.confidence < self.config.pool.min_llm_confidence or self.pool.contains_text(text):
            return
        nearest = self.pool.search(local.vector, 1)
        if nearest and nearest[0].similarity >= self.config.pool.near_duplicate_cosine:
            return
        alone = local.unprimed or local.answer
        if named_by_context(llm.category, previous, alone, self.config.context.content_confidence):
            # The pool holds what a message says alone (the local classifier reads it alone; the
            # seed pool holds only conversations' first turns and switches): "why?" labelled
            # coding after a coding request would make every later "why?" read coding.
            self.counters["pool_context_labels"] += 1
            return
        conv_key, user_key = whose
        entry = PoolEntry(
            text,
            llm.category,
            local.vector,
            "llm",
            llm.confidence,
            conv_key=conv_key,
            user_key=user_key,
            origin=teacher,
        )
        view = None
        if alone is not None:
            share = alone.tier_probabilities
            # No vote for any tier (no neighbour in the taxonomy) says nothing against the label.
            known = sum(share) > 0 and llm.tier in TIERS
            label_share = share[TIERS.index(llm.tier)] if known else None
            view = LocalView(alone.category, alone.tier, alone.confidence, label_share)
        try:
            await self.gate.load(self.conn, now)
        except DatabaseError:  # read again next time; meanwhile every origin is new
            self.counters["db_errors"] += 1
        verdict = self.gate.judge(teacher, now, llm.tier, view)
        if verdict.action == QUARANTINE:
            self.counters["pool_quarantined"] += 1
            if self.counters["pool_quarantined"] > self.config.pool.max_quarantine:
                self.counters["pool_quarantine_dropped"] += 1
                return
            local_view = (view.category, view.confidence) if view else None
            self.pool_writer.put(self.pool.quarantine_job(entry, local_view, verdict.reason, now))
            return
        if await self.pool.add_behind([entry], self.pool_writer.put, now):
            self.gate.learned(teacher, now)
        if self.fitting is not None:
            self.fitting.refit_if_grown()

    def _open(
        self,
        decision: RoutingDecision,
        text: str,
        conv_key: str | None,
        at: float,
        user_key: str | None = None,
        context: PreviousTurn | None = None,
        read_as: str | None = None,
    ) -> None:
        """Log the decision on `text`; keep the turn, as routing read it (`read_as`, else
        `text`, which it then holds as its sender's own words), as the next turn's context."""
        decision.text, decision.conv_key, decision.at = text, conv_key, at
        decision.user_key = user_key
        erased = self.log.erasures.since(at, conv_key, user_key)  # while it was being routed
        if erased:
            self._forget_vectors()  # its vector, made after the erasure emptied the cache
        if conv_key is not None and decision.category is not None and not erased:
            read = read_as or text
            own = text if read != text else None
            turn = routed_turn(decision.category, at, read, context, decision.confidence, own)
            self.context.record(conv_key, turn, user_key)
        if decision.source == "fallback":
            log.info("routing fell back to %s: %s", decision.tier, decision.error)
        self.log.open(decision)
