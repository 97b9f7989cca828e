"""DecisionBuilder: turns a signal's answer (or the lack of one) into a RoutingDecision with its
tier, model and tier-mapping version."""

from __future__ import annotations

from typing import Any

from router.config import RouterConfig
from router.decision import RoutingDecision, SignalAnswer, Source
from router.signals.classifier import LocalAnswer, LocalResult
from router.signals.continuity import PreviousTurn
from router.taxonomy import Mode, Taxonomy


class DecisionBuilder:
    """Builds decisions under one config and taxonomy."""

    def __init__(self, config: RouterConfig, taxonomy: Taxonomy) -> None:
        self.config = config
        self.taxonomy = taxonomy

    def _decision(self, **fields: Any) -> RoutingDecision:
        tier = fields.pop("tier")
        return RoutingDecision(
            tier=tier,
            model=fields.pop("model", None) or self.config.models.for_tier(tier),
            tier_mapping_version=self.taxonomy.version,
            latency_ms=0.0,
            **fields,
        )

    def default_tier(
        self, mode: Mode, source: Source, error: str | None = None, tier: str | None = None
    ) -> RoutingDecision:
        """No category: the configured default tier (routing off, or every signal failed), or
        the `tier` given (an image with no text)."""
        return self._decision(
            category=None,
            tier=tier or self.config.routing.default_tier,
            confidence=None,
            source=source,
            mode=mode,
            error=error,
        )

    def named(self, mode: Mode, model: str, tier: str | None, source: Source) -> RoutingDecision:
        """A request that named its model (a tier alias, a provider model passed through): no
        category; `tier` is None for a model no tier uses."""
        return self._decision(
            category=None, tier=tier or "", model=model, confidence=None, source=source, mode=mode
        )

    @staticmethod
    def _local_answer(local: LocalResult | None) -> SignalAnswer | None:
        if local is None or local.answer is None:
            return None
        a = local.answer
        return SignalAnswer(a.category, a.tier, a.confidence, local.latency_ms)

    def from_llm(self, llm: SignalAnswer, mode: Mode, local: LocalResult | None) -> RoutingDecision:
        return self._decision(
            category=llm.category,
            tier=llm.tier,
            confidence=llm.confidence,
            source="llm",
            mode=mode,
            llm=llm,
            knn=self._local_answer(local),
            knn_swayed=local is not None and local.context_decided,
            neighbours=local.answer.neighbours if local and local.answer else [],
        )

    def from_local(
        self,
        answer: LocalAnswer,
        local: LocalResult,
        mode: Mode,
        previous: PreviousTurn | None,
    ) -> RoutingDecision:
        return self._decision(
            category=answer.category,
            tier=answer.tier,
            confidence=answer.confidence,
            source="prior" if local.swayed else "knn",
            mode=mode,
            knn=self._local_answer(local),
            knn_swayed=local.context_decided,
            prior_category=previous.category if previous else None,
            neighbours=answer.neighbours,
        )

    def fall_back(self, mode: Mode, local: LocalResult | None, error: str) -> RoutingDecision:
        if local is not None and local.answer is not None:
            answer = local.answer
            return self._decision(
                category=answer.category,
                tier=answer.tier,
                confidence=answer.confidence,
                source="fallback",
                mode=mode,
                knn=self._local_answer(local),
                knn_swayed=local.context_decided,
                neighbours=answer.neighbours,
                error=error,
            )
        return self.default_tier(mode, "fallback", error)
