"""Decisions in flight and their rows: a decision is opened when routed and finished with how
its request ended (outcome, usage, error); then its row is queued for the log. A request still
open after OPEN_ROW_AFTER_S (a long stream) has its row written open too, so a hard kill leaves
it behind to be marked `interrupted` at the next start."""

from __future__ import annotations

import asyncio
import logging

from router.decision import OUTCOMES, Outcome, RoutingDecision
from router.store.erasure import RecentErasures, Scope
from router.store.log_writer import LogWriter
from router.store.routing_log import PromptKeeping, row_of
from router.store.spool import SpoolReplay

log = logging.getLogger(__name__)

OPEN_ROW_AFTER_S = 1.0
ERASED = PromptKeeping(store=False)  # a row whose sender was erased keeps no prompt


class DecisionLog:
    """Owns the write-behind; `finish` never waits and never raises for the database."""

    def __init__(self, writer: LogWriter, keeping: PromptKeeping | None = None) -> None:
        self.writer = writer
        self.keeping = keeping or PromptKeeping()  # what a row keeps of its prompt ([privacy])
        self._open: dict[str, RoutingDecision] = {}
        # A request whose sender was erased while it ran keeps no prompt in its rows (the
        # erasure cleared the rows written until then).
        self.erasures = RecentErasures()
        self._open_row_timers: dict[str, asyncio.TimerHandle] = {}
        # Rows processes that died left in the crash spool, written at the start (or retried).
        self.replay: SpoolReplay | None = None

    def open(self, decision: RoutingDecision) -> None:
        self._open[decision.id] = decision
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no event loop (a synchronous tool): rows are written at the end
            return
        timer = loop.call_later(OPEN_ROW_AFTER_S, self._write_open_row, decision.id)
        self._open_row_timers[decision.id] = timer

    def _write_open_row(self, decision_id: str) -> None:
        self._open_row_timers.pop(decision_id, None)
        decision = self._open.get(decision_id)
        if decision is not None:  # the final row replaces it
            self.writer.put(row_of(decision, still_open=True, keeping=self._keeping_of(decision)))

    def _keeping_of(self, decision: RoutingDecision) -> PromptKeeping:
        erased = self.erasures.since(decision.at, decision.conv_key, decision.user_key)
        return ERASED if erased else self.keeping

    def forget(self, scope: Scope, at: float) -> None:
        """An erasure of `scope` at `at`: the requests of it asked by then and not yet ended
        keep no prompt in their rows."""
        self.erasures.add(scope, at)

    def finish(
        self,
        decision: RoutingDecision,
        outcome: Outcome,
        *,
        prompt_tokens: int | None = None,
        completion_tokens: int | None = None,
        error: str | None = None,
    ) -> None:
        """Queue the decision's row. A decision is finished once: later calls change nothing."""
        if outcome not in OUTCOMES:
            raise ValueError(f"unknown outcome {outcome!r}; one of {', '.join(OUTCOMES)}")
        if self._open.pop(decision.id, None) is None:
            return
        keeping = self._keeping_of(decision)
        timer = self._open_row_timers.pop(decision.id, None)
        if timer is not None:
            timer.cancel()
        decision.outcome = outcome
        if prompt_tokens is not None:
            decision.prompt_tokens = prompt_tokens
        if completion_tokens is not None:
            decision.completion_tokens = completion_tokens
        if error:
            decision.add_error(error)
        self.writer.put(row_of(decision, keeping=keeping))

    async def flush(self, timeout_s: float | None = None) -> bool:
        """Wait until every finished decision's row is committed (see LogWriter.flush)."""
        return await self.writer.flush(timeout_s)

    async def close(self) -> None:
        """Decisions still open are logged as interrupted; then everything is written."""
        if self._open:
            log.warning("%d requests open at shutdown: logged as interrupted", len(self._open))
        for decision in list(self._open.values()):
            self.finish(decision, "interrupted")
        if self.replay is not None:
            await self.replay.close()
        await self.writer.close()
