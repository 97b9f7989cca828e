"""Shadow agreement from the routing log: on the messages the LLM decided while the local signal
answered beside it, how often the two chose the same tier, and which way they differed."""

from __future__ import annotations

from dataclasses import dataclass, field

from router.store.database import Database
from router.taxonomy import TIERS


@dataclass
class AgreementCount:
    """One group of compared messages; every rate comes with the count behind it."""

    name: str
    compared: int = 0
    same_tier: int = 0
    same_category: int = 0
    upgrades: int = 0  # the local signal chose a stronger tier than the LLM
    downgrades: int = 0  # a weaker one: the error a user sees

    def rate(self, count: int) -> float | None:
        return count / self.compared if self.compared else None

    @property
    def tier_rate(self) -> float | None:
        return self.rate(self.same_tier)

    def add(self, n: int, same_tier: bool, same_category: bool, gap: int) -> None:
        self.compared += n
        self.same_tier += n if same_tier else 0
        self.same_category += n if same_category else 0
        self.upgrades += n if gap > 0 else 0
        self.downgrades += n if gap < 0 else 0

    def to_json(self) -> dict[str, object]:
        return {
            "compared": self.compared,
            "same_tier": self.same_tier,
            "tier_rate": self.tier_rate,
            "same_category": self.same_category,
            "category_rate": self.rate(self.same_category),
            "upgrades": self.upgrades,
            "downgrades": self.downgrades,
        }


@dataclass
class ShadowAgreement:
    since: float | None
    min_confidence: float
    context_min_confidence: float  # live mode's bar when the conversation swayed the answer
    overall: AgreementCount = field(default_factory=lambda: AgreementCount("all"))
    # Only the messages the local signal was confident on: the ones it would decide when live.
    confident: AgreementCount = field(default_factory=lambda: AgreementCount("confident"))
    per_category: dict[str, AgreementCount] = field(default_factory=dict)

    def to_json(self) -> dict[str, object]:
        return {
            "min_confidence": self.min_confidence,
            "context_min_confidence": self.context_min_confidence,
            "overall": self.overall.to_json(),
            "confident": self.confident.to_json(),
            "per_category": {name: row.to_json() for name, row in self.per_category.items()},
        }


async def shadow_agreement(
    conn: Database,
    min_confidence: float,
    context_min_confidence: float,
    since: float | None = None,
) -> ShadowAgreement:
    """Rows where the LLM decided (source 'llm', so the row's tier is the LLM's) and the local
    signal answered; grouped by the LLM's category. The confident ones clear live mode's bar:
    `context_min_confidence` where the conversation had a say in the local answer."""
    where = "source = 'llm' AND llm_category IS NOT NULL AND knn_tier IS NOT NULL"
    params: tuple[float, ...] = (context_min_confidence, min_confidence)
    if since is not None:
        where += " AND at >= ?"
        params += (since,)
    sql = (
        "SELECT llm_category, tier, knn_tier, knn_category = llm_category,"
        " CASE WHEN knn_swayed = 1 THEN COALESCE(knn_confidence, 0) >= ?"
        " ELSE COALESCE(knn_confidence, 0) >= ? END,"
        " COUNT(*) FROM routing_log"
        f" WHERE {where} GROUP BY 1, 2, 3, 4, 5"
    )
    report = ShadowAgreement(since, min_confidence, context_min_confidence)
    rows = await conn.fetch_all(sql, params)
    for category, llm_tier, knn_tier, same_category, confident, n in rows:
        if llm_tier not in TIERS or knn_tier not in TIERS:
            continue
        gap = TIERS.index(knn_tier) - TIERS.index(llm_tier)
        args = (int(n), gap == 0, bool(same_category), gap)
        report.overall.add(*args)
        if confident:
            report.confident.add(*args)
        report.per_category.setdefault(category, AgreementCount(category)).add(*args)
    report.per_category = dict(
        sorted(report.per_category.items(), key=lambda item: -item[1].compared)
    )
    return report
