"""What routed traffic cost, from the token usage in the routing log and the configured prices,
against sending every message to the medium or the strong tier; and the per-day series charted."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from router.config import ModelPrice, RouterConfig
from router.store.database import Database, Row

PER_TOKENS = 1_000_000


def price_of(price: ModelPrice, prompt_tokens: int, completion_tokens: int) -> float:
    return (price.input * prompt_tokens + price.output * completion_tokens) / PER_TOKENS


@dataclass
class CostReport:
    """Costs over the messages with token usage whose model has a price. The baselines assume
    the same token counts on the baseline model (the same prompt; a reply of the same length)."""

    since: float | None
    medium_model: str
    strong_model: str
    messages: int = 0  # every decision in the window
    priced: int = 0  # the messages behind the figures
    without_usage: int = 0
    unpriced: dict[str, int] = field(default_factory=dict)  # model -> messages with usage
    prompt_tokens: int = 0
    completion_tokens: int = 0
    routed: float = 0.0
    all_medium: float | None = 0.0  # None: the medium model has no price
    all_strong: float | None = 0.0

    @staticmethod
    def saving(routed: float, baseline: float | None) -> float | None:
        """The share of the baseline's cost that routing saved (negative: it cost more)."""
        if baseline is None or baseline <= 0.0:
            return None
        return 1.0 - routed / baseline

    @property
    def saving_vs_medium(self) -> float | None:
        return self.saving(self.routed, self.all_medium)

    @property
    def saving_vs_strong(self) -> float | None:
        return self.saving(self.routed, self.all_strong)

    @property
    def unpriced_total(self) -> int:
        return sum(self.unpriced.values())

    def line(self) -> str:
        """One line for /routing stats: the figures, then the counts behind them."""
        if not self.priced:
            extra = self._apart()
            return "cost: no priced usage yet" + (f" ({extra})" if extra else "")
        parts = [f"cost: routed {money(self.routed)}"]
        for name, baseline, saving in (
            ("all-medium", self.all_medium, self.saving_vs_medium),
            ("all-strong", self.all_strong, self.saving_vs_strong),
        ):
            if baseline is None:
                parts.append(f"{name} unpriced")
            else:
                parts.append(f"{name} {money(baseline)} ({saved(saving)})")
        text = " · ".join(parts) + f" (n={self.priced})"
        apart = self._apart()
        return f"{text}; {apart}" if apart else text

    def _apart(self) -> str:
        notes = []
        if self.without_usage:
            notes.append(f"{self.without_usage} without usage")
        if self.unpriced_total:
            notes.append(f"{self.unpriced_total} of unpriced models")
        return ", ".join(notes)

    def to_json(self) -> dict[str, object]:
        return {
            "messages": self.messages,
            "priced": self.priced,
            "without_usage": self.without_usage,
            "unpriced_models": self.unpriced,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "routed": self.routed,
            "all_medium": self.all_medium,
            "all_strong": self.all_strong,
            "medium_model": self.medium_model,
            "strong_model": self.strong_model,
            "saving_vs_medium": self.saving_vs_medium,
            "saving_vs_strong": self.saving_vs_strong,
        }


def money(value: float) -> str:
    """Amounts in the prices' own unit: enough digits for a day of cheap-model chat."""
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 1:
        return f"{value:.2f}"
    return f"{value:.4f}"


def saved(fraction: float | None) -> str:
    """'saved 62%', or '40% more' when routing cost more than the baseline."""
    if fraction is None:
        return "-"
    return f"saved {100 * fraction:.0f}%" if fraction >= 0 else f"{-100 * fraction:.0f}% more"


def _where(since: float | None) -> tuple[str, tuple[float, ...]]:
    return (" WHERE at >= ?", (since,)) if since is not None else ("", ())


async def _usage_by(conn: Database, since: float | None, group: str) -> list[Row]:
    where, params = _where(since)
    sql = (
        f"SELECT {group} AS bucket, model, COUNT(*) AS n,"
        " SUM(CASE WHEN prompt_tokens IS NULL OR completion_tokens IS NULL THEN 1 ELSE 0 END)"
        " AS no_usage,"
        " SUM(CASE WHEN prompt_tokens IS NOT NULL AND completion_tokens IS NOT NULL"
        "     THEN prompt_tokens ELSE 0 END) AS prompt,"
        " SUM(CASE WHEN prompt_tokens IS NOT NULL AND completion_tokens IS NOT NULL"
        "     THEN completion_tokens ELSE 0 END) AS completion"
        f" FROM routing_log{where} GROUP BY 1, 2 ORDER BY 1, 2"
    )
    return list(await conn.fetch_all(sql, params))


def _fold(rows: list[Row], config: RouterConfig, since: float | None) -> CostReport:
    prices = config.prices
    medium, strong = config.models.medium, config.models.strong
    report = CostReport(since=since, medium_model=medium, strong_model=strong)
    if medium not in prices:
        report.all_medium = None
    if strong not in prices:
        report.all_strong = None
    unpriced: dict[str, int] = defaultdict(int)
    for row in rows:
        n, no_usage = int(row["n"]), int(row["no_usage"] or 0)
        report.messages += n
        report.without_usage += no_usage
        with_usage = n - no_usage
        if not with_usage:
            continue
        model = row["model"]
        if model not in prices:
            unpriced[model] += with_usage
            continue
        prompt, completion = int(row["prompt"] or 0), int(row["completion"] or 0)
        report.priced += with_usage
        report.prompt_tokens += prompt
        report.completion_tokens += completion
        report.routed += price_of(prices[model], prompt, completion)
        if report.all_medium is not None:
            report.all_medium += price_of(prices[medium], prompt, completion)
        if report.all_strong is not None:
            report.all_strong += price_of(prices[strong], prompt, completion)
    report.unpriced = dict(unpriced)
    return report


async def cost_report(
    conn: Database, config: RouterConfig, since: float | None = None
) -> CostReport:
    return _fold(await _usage_by(conn, since, "''"), config, since)


async def daily_costs(
    conn: Database, config: RouterConfig, since: float | None = None
) -> dict[str, CostReport]:
    """UTC day (YYYY-MM-DD) -> that day's cost report."""
    rows = await _usage_by(conn, since, conn.sql_function("utc_day", "at"))
    days: dict[str, list[Row]] = defaultdict(list)
    for row in rows:
        if row["bucket"] is not None:  # a row whose time is no date (Inf, milliseconds) is left out
            days[row["bucket"]].append(row)
    return {day: _fold(day_rows, config, since) for day, day_rows in sorted(days.items())}


async def daily_counts(
    conn: Database, column: str, since: float | None = None
) -> dict[str, dict[str, int]]:
    """UTC day -> {value of `column` ('tier' or 'source') -> decisions}."""
    if column not in ("tier", "source"):
        raise ValueError(f"cannot count by {column!r} per day")
    where, params = _where(since)
    day = conn.sql_function("utc_day", "at")
    sql = (
        f"SELECT {day}, COALESCE({column}, '-'), COUNT(*) FROM routing_log{where}"
        " GROUP BY 1, 2 ORDER BY 1, 2"
    )
    days: dict[str, dict[str, int]] = defaultdict(dict)
    for day, value, count in await conn.fetch_all(sql, params):
        if day is not None:  # a row whose time is no date (Inf, milliseconds) is left out
            days[day][value] = int(count)
    return dict(days)
