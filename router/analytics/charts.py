"""Pictures for operators, drawn on matplotlib's Agg canvas (no screen, no pyplot state): the
confusion matrix of `crabbot pool validate`, and the daily mix and cost of `crabbot stats`."""

from __future__ import annotations

import datetime as dt
import io
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from router.analytics.cost import CostReport, daily_costs, daily_counts
from router.config import RouterConfig
from router.store.database import Database
from router.taxonomy import TIERS

DPI = 100
CONFUSION_SIZE = (8.0, 7.0)  # inches: 800 x 700 pixels
STATS_SIZE = (10.0, 8.0)  # 1000 x 800 pixels
TIER_COLOURS = {"cheap": "#4caf50", "medium": "#2196f3", "strong": "#e53935"}


def _png(figure: Figure) -> bytes:
    # No bbox_inches="tight": the picture keeps the size the caller was promised.
    buffer = io.BytesIO()
    FigureCanvasAgg(figure).print_png(buffer)
    return buffer.getvalue()


def confusion_png(labels: list[str], matrix: np.ndarray, title: str) -> bytes:
    """Rows are labels, columns predictions; colour is the row share, text the count."""
    counts = np.asarray(matrix, dtype=float)
    totals = counts.sum(axis=1, keepdims=True)
    shares = np.divide(counts, totals, out=np.zeros_like(counts), where=totals > 0)
    figure = Figure(figsize=CONFUSION_SIZE, dpi=DPI)
    axes = figure.subplots()
    axes.imshow(shares, cmap="Blues", vmin=0.0, vmax=1.0)
    axes.set_xticks(range(len(labels)), labels, rotation=40, ha="right")
    axes.set_yticks(range(len(labels)), labels)
    axes.set_xlabel("predicted")
    axes.set_ylabel("label")
    axes.set_title(title)
    for row in range(len(labels)):
        for column in range(len(labels)):
            if counts[row, column]:
                colour = "white" if shares[row, column] > 0.5 else "black"
                axes.text(column, row, f"{int(counts[row, column])}", ha="center", va="center",
                          color=colour, fontsize=9)  # fmt: skip
    figure.subplots_adjust(left=0.2, bottom=0.2, right=0.97, top=0.93)
    return _png(figure)


def stats_png(
    days: list[str],
    tiers: dict[str, list[int]],
    sources: dict[str, list[int]],
    cost: dict[str, list[float]],
    currency: str = "USD",
    title: str = "crabbot routing",
) -> bytes:
    """Three panels over the same days: decisions by tier, by source, and the routed cost
    against the all-medium and all-strong baselines (cumulative)."""
    figure = Figure(figsize=STATS_SIZE, dpi=DPI)
    by_tier, by_source, money = figure.subplots(3, 1)
    positions = np.arange(len(days))
    for axes, series, colours in (
        (by_tier, tiers, TIER_COLOURS),
        (by_source, sources, {}),
    ):
        bottom = np.zeros(len(days))
        ordered = sorted(series, key=lambda name: (TIERS.index(name) if name in TIERS else 9, name))
        for name in ordered:
            values = np.asarray(series[name], dtype=float)
            axes.bar(positions, values, bottom=bottom, label=name, color=colours.get(name))
            bottom += values
        axes.set_ylabel("decisions")
        axes.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
    by_tier.set_title(title)
    for name, style in (("routed", "-"), ("all medium", "--"), ("all strong", ":")):
        if name in cost:
            money.plot(positions, np.cumsum(cost[name]), style, marker="o", label=name)
    money.set_ylabel(f"cost, cumulative ({currency})")
    money.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
    step = max(1, len(days) // 12)
    for axes in (by_tier, by_source, money):
        axes.set_xticks(positions[::step], [days[i] for i in range(0, len(days), step)])
        axes.set_xlim(-0.6, max(len(days) - 0.4, 0.6))
    figure.subplots_adjust(left=0.08, right=0.85, top=0.95, bottom=0.05, hspace=0.35)
    return _png(figure)


def write_png(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


async def stats_chart(
    conn: Database, config: RouterConfig, since: float | None, title: str
) -> bytes:
    """The tier and source mix per day and the cost against both baselines, as a PNG."""
    tiers = await daily_counts(conn, "tier", since)
    sources = await daily_counts(conn, "source", since)
    costs = await daily_costs(conn, config, since)
    days = _day_range(sorted(set(tiers) | set(costs)))
    tier_names = sorted({name for counts in tiers.values() for name in counts})
    source_names = sorted({name for counts in sources.values() for name in counts})
    cost_series: dict[str, list[float]] = {"routed": []}
    empty = CostReport(since, config.models.medium, config.models.strong)
    baselines = {"all medium": "all_medium", "all strong": "all_strong"}
    for name, attribute in baselines.items():
        if getattr(empty, attribute) is not None:
            cost_series[name] = []
    for day in days:
        report = costs.get(day, empty)
        cost_series["routed"].append(report.routed)
        for name, attribute in baselines.items():
            if name in cost_series:
                cost_series[name].append(getattr(report, attribute) or 0.0)
    return stats_png(
        [day[5:] for day in days],
        {name: [tiers.get(day, {}).get(name, 0) for day in days] for name in tier_names},
        {name: [sources.get(day, {}).get(name, 0) for day in days] for name in source_names},
        cost_series,
        currency="price units",
        title=f"{title} (UTC days)",
    )


def _day_range(days: list[str]) -> list[str]:
    """Every day from the first to the last with data, gaps filled."""
    if not days:
        return [dt.datetime.now(dt.UTC).strftime("%Y-%m-%d")]
    first, last = (dt.date.fromisoformat(days[0]), dt.date.fromisoformat(days[-1]))
    return [(first + dt.timedelta(n)).isoformat() for n in range((last - first).days + 1)]
