"""Decisions in flight and their rows: a decision is opened when routed and finished with how
its request ended (outcome, usage, error); only then is its one row queued for the log."""

from __future__ import annotations

import logging

from router.decision import OUTCOMES, RoutingDecision
from router.log_writer import LogWriter
from router.routing_log import row_of

log = logging.getLogger(__name__)


class DecisionLog:
    """Owns the write-behind; `finish` never waits and never raises for the database."""

    def __init__(self, writer: LogWriter) -> None:
        self.writer = writer
        self._open: dict[str, RoutingDecision] = {}

    def open(self, decision: RoutingDecision) -> None:
        self._open[decision.id] = decision

    def finish(
        self,
        decision: RoutingDecision,
        outcome: str,
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
        decision.outcome = outcome
        if prompt_tokens is not None:
            decision.prompt_tokens = prompt_tokens
        if completion_tokens is not None:
            decision.completion_tokens = completion_tokens
        if error:
            decision.add_error(error)
        self.writer.put(row_of(decision))

    async def flush(self, timeout_s: float | None = None) -> bool:
        """Wait until every finished decision's row is committed (see LogWriter.flush)."""
        return await self.writer.flush(timeout_s)

    async def close(self) -> None:
        """Decisions still open are logged as interrupted; then everything is written."""
        if self._open:
            log.warning("%d requests open at shutdown: logged as interrupted", len(self._open))
        for decision in list(self._open.values()):
            self.finish(decision, "interrupted")
        await self.writer.close()
