"""RoutingDecision: what the router decided for one message, and why."""

from __future__ import annotations

import secrets
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from router.pool.pool import Neighbour
from router.taxonomy import Mode

# How a decision's request ended; "routed" is a decision nobody asked an answer for (`crabbot
# route`, a bot with no upstream), "interrupted" one still open when the process stopped.
Outcome = Literal["completed", "provider_error", "client_gone", "interrupted", "routed"]
OUTCOMES: tuple[Outcome, ...] = (
    "completed",
    "provider_error",
    "client_gone",
    "interrupted",
    "routed",
)
# Who decided: the local signal, the LLM categorizer, the conversation's previous task, the next
# signal after a failure, a fixed tier; or a request that named its model (a tier alias, or a
# provider model passed through).
Source = Literal["knn", "llm", "prior", "fallback", "fixed", "alias", "passthrough"]


@dataclass(frozen=True)
class SignalAnswer:
    """One signal's answer, kept beside the decision (shadow logging, explanations)."""

    category: str
    tier: str
    confidence: float
    latency_ms: float


@dataclass
class RoutingDecision:
    category: str | None
    tier: str
    model: str
    confidence: float | None
    source: Source
    mode: Mode
    tier_mapping_version: str
    latency_ms: float
    llm: SignalAnswer | None = None
    knn: SignalAnswer | None = None
    prior_category: str | None = None
    # The conversation had a say in the local signal's answer: it named the task, or the turn
    # left the task it was read against (live mode then needs context.min_confidence to decide
    # without the LLM). Logged as knn_swayed, the name it had when only the first counted.
    knn_swayed: bool = False
    neighbours: list[Neighbour] = field(default_factory=list)
    error: str | None = None
    # The routing log row's own fields, filled in by the router and by whoever answers.
    id: str = field(default_factory=lambda: secrets.token_hex(8))
    text: str = ""
    conv_key: str | None = None
    user_key: str | None = None  # who spoke: their context is their own previous turn
    at: float = 0.0
    outcome: Outcome | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    transcription_ms: float | None = None  # a voice message's transcription, before routing

    def add_error(self, error: str) -> None:
        self.error = f"{self.error}; {error}" if self.error else error

    def to_json(self) -> dict[str, Any]:
        """The decision as one flat JSON object (the CLI's and the proxy's wire form)."""
        data: dict[str, Any] = {
            "category": self.category,
            "tier": self.tier,
            "model": self.model,
            "confidence": None if self.confidence is None else round(self.confidence, 4),
            "source": self.source,
            "mode": self.mode,
            "tier_mapping_version": self.tier_mapping_version,
            "latency_ms": round(self.latency_ms, 2),
        }
        for name in ("llm", "knn"):
            answer = getattr(self, name)
            if answer is not None:
                data[name] = {
                    k: round(v, 4) if isinstance(v, float) else v for k, v in asdict(answer).items()
                }
        if self.prior_category is not None:
            data["prior_category"] = self.prior_category
        if self.knn_swayed:
            data["knn_swayed"] = True
        if self.neighbours:
            data["nearest"] = [
                {"text": n.text[:80], "category": n.category, "similarity": round(n.similarity, 3)}
                for n in self.neighbours[:3]
            ]
        if self.transcription_ms is not None:
            data["transcription_ms"] = round(self.transcription_ms, 2)
        if self.error:
            data["error"] = self.error
        return data

    def explain(self) -> str:
        """One line a person can read: the nearest pooled message behind a local decision."""
        if not self.neighbours:
            return ""
        top = self.neighbours[0]
        return f"nearest: {top.text[:40]} … {top.category}, {top.similarity:.2f}"
