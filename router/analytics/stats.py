"""Routing statistics: pure queries over the routing log, each taking the connection and an
optional since-timestamp (unix seconds; None means all time)."""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass

from router.store.database import Database

# The columns a decision can be counted by; a whitelist, since the name goes into the SQL text.
GROUP_COLUMNS = ("tier", "category", "source", "mode", "model", "outcome")
REASON_CHARS = 60  # errors are counted by their first words: "categorizer: timeout", ...
TOP_REASONS = 5


@dataclass(frozen=True)
class Agreement:
    """How often the local signal agreed with the LLM on rows where both answered."""

    compared: int
    same_category: int
    same_tier: int

    @property
    def category_rate(self) -> float | None:
        return self.same_category / self.compared if self.compared else None

    @property
    def tier_rate(self) -> float | None:
        return self.same_tier / self.compared if self.compared else None


@dataclass(frozen=True)
class Latency:
    """Categorizer latency over the rows where the LLM answered, in milliseconds."""

    count: int
    median_ms: float | None
    p95_ms: float | None


@dataclass(frozen=True)
class Summary:
    since: float | None
    total: int
    by_tier: dict[str, int]
    by_category: dict[str, int]
    by_source: dict[str, int]
    by_outcome: dict[str, int]
    fallbacks: int
    errors: int
    errors_by_reason: dict[str, int]
    agreement: Agreement
    llm_latency: Latency


def _where(since: float | None, *conditions: str) -> tuple[str, tuple[float, ...]]:
    parts = list(conditions)
    params: tuple[float, ...] = ()
    if since is not None:
        parts.append("at >= ?")
        params = (since,)
    return (" WHERE " + " AND ".join(parts) if parts else ""), params


async def total_decisions(conn: Database, since: float | None = None) -> int:
    where, params = _where(since)
    row = await conn.fetch_one(f"SELECT COUNT(*) FROM routing_log{where}", params)
    return int(row[0]) if row else 0


async def count_by(conn: Database, column: str, since: float | None = None) -> dict[str, int]:
    """Decisions per value of `column` (NULL shown as '-'; an outcome not known yet, of a
    request still being answered, as 'open'), largest first."""
    if column not in GROUP_COLUMNS:
        raise ValueError(f"cannot group by {column!r}; choose one of {', '.join(GROUP_COLUMNS)}")
    where, params = _where(since)
    value = (
        "COALESCE(outcome, CASE WHEN open_pid IS NOT NULL THEN 'open' END, '-')"
        if column == "outcome"
        else f"COALESCE({column}, '-')"
    )
    sql = f"SELECT {value}, COUNT(*) AS n FROM routing_log{where} GROUP BY 1 ORDER BY n DESC, 1"
    return {str(row[0]): int(row[1]) for row in await conn.fetch_all(sql, params)}


async def fallbacks_and_errors(conn: Database, since: float | None = None) -> tuple[int, int]:
    """(decisions with source 'fallback', rows carrying any error: signal or upstream)."""
    where, params = _where(since)
    sql = (
        "SELECT COALESCE(SUM(CASE WHEN source = 'fallback' THEN 1 ELSE 0 END), 0),"
        " COALESCE(SUM(CASE WHEN error IS NOT NULL THEN 1 ELSE 0 END), 0)"
        f" FROM routing_log{where}"
    )
    row = await conn.fetch_one(sql, params)
    return (int(row[0]), int(row[1])) if row else (0, 0)


async def errors_by_reason(
    conn: Database, since: float | None = None, limit: int = TOP_REASONS
) -> dict[str, int]:
    """The most frequent errors (signal fallbacks, provider failures), by their first words. A
    row with two (a fallback, then the provider failed too: "categorizer: timeout; provider:
    ...") counts under each."""
    where, params = _where(since, "error IS NOT NULL")
    sql = (
        f"SELECT substr(error, 1, {4 * REASON_CHARS}), COUNT(*) FROM routing_log{where} GROUP BY 1"
    )
    counts: Counter[str] = Counter()
    for error, n in await conn.fetch_all(sql, params):
        for reason in {part[:REASON_CHARS] for part in str(error).split("; ") if part}:
            counts[reason] += int(n)
    ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    return dict(ranked[: int(limit)])


async def knn_agreement(conn: Database, since: float | None = None) -> Agreement:
    """Category and tier agreement where both signals answered. The LLM decided those rows
    (source 'llm'), so the row's tier is the LLM's tier."""
    where, params = _where(
        since, "llm_category IS NOT NULL", "knn_category IS NOT NULL", "source = 'llm'"
    )
    sql = (
        "SELECT COUNT(*),"
        " COALESCE(SUM(CASE WHEN knn_category = llm_category THEN 1 ELSE 0 END), 0),"
        " COALESCE(SUM(CASE WHEN knn_tier = tier THEN 1 ELSE 0 END), 0)"
        f" FROM routing_log{where}"
    )
    row = await conn.fetch_one(sql, params)
    if row is None:
        return Agreement(0, 0, 0)
    return Agreement(int(row[0]), int(row[1]), int(row[2]))


def percentile(sorted_values: list[float], fraction: float) -> float | None:
    """Nearest-rank percentile of an ascending list (None when empty)."""
    if not sorted_values:
        return None
    rank = min(len(sorted_values), max(1, math.ceil(fraction * len(sorted_values))))
    return sorted_values[rank - 1]


def median(sorted_values: list[float]) -> float | None:
    if not sorted_values:
        return None
    middle = len(sorted_values) // 2
    if len(sorted_values) % 2:
        return sorted_values[middle]
    return (sorted_values[middle - 1] + sorted_values[middle]) / 2


async def categorizer_latency(conn: Database, since: float | None = None) -> Latency:
    where, params = _where(since, "llm_latency_ms IS NOT NULL")
    sql = f"SELECT llm_latency_ms FROM routing_log{where} ORDER BY llm_latency_ms"
    values = [float(row[0]) for row in await conn.fetch_all(sql, params)]
    return Latency(len(values), median(values), percentile(values, 0.95))


async def summary(conn: Database, since: float | None = None) -> Summary:
    fallbacks, errors = await fallbacks_and_errors(conn, since)
    return Summary(
        since=since,
        total=await total_decisions(conn, since),
        by_tier=await count_by(conn, "tier", since),
        by_category=await count_by(conn, "category", since),
        by_source=await count_by(conn, "source", since),
        by_outcome=await count_by(conn, "outcome", since),
        fallbacks=fallbacks,
        errors=errors,
        errors_by_reason=await errors_by_reason(conn, since),
        agreement=await knn_agreement(conn, since),
        llm_latency=await categorizer_latency(conn, since),
    )
