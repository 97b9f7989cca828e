"""`crabbot stats --since 24h|7d|all [--plot FILE.png]`: the /routing stats report for a window,
with the cost against both baselines and the shadow agreement, as rich tables or JSON."""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import time

from rich.table import Table

from bot.admin import format_summary
from bot.cli.tooling import consoles, open_store, pct
from bot.config import CrabbotConfig
from router.analytics import stats as routing_stats
from router.analytics.agreement import AgreementCount, ShadowAgreement, shadow_agreement
from router.analytics.cost import CostReport, cost_report, money, saved
from router.store.settings import get_setting

_WINDOW = re.compile(r"(\d+)\s*([mhdw])")
_UNIT_S = {"m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_since(text: str, now: float) -> float | None:
    """'24h', '7d', '2w', '90m' -> the window's start in unix seconds; 'all' -> None."""
    text = text.strip().lower()
    if text == "all":
        return None
    match = _WINDOW.fullmatch(text)
    if not match or int(match.group(1)) == 0:
        raise ValueError(f"--since {text!r}: use a number and m, h, d or w (24h, 7d), or all")
    return now - int(match.group(1)) * _UNIT_S[match.group(2)]


def window_title(text: str) -> str:
    return "all time" if text.strip().lower() == "all" else f"last {text.strip()}"


def cost_table(report: CostReport) -> Table:
    table = Table(title="cost (prices per million tokens, from \\[prices])", title_justify="left")
    for column in ("if every message went to", "model", "cost", "routing"):
        table.add_column(column, justify="right" if column in ("cost", "routing") else "left")
    table.add_row("its routed tier", "(as routed)", money(report.routed), "")
    for name, model, baseline, saving in (
        ("the medium tier", report.medium_model, report.all_medium, report.saving_vs_medium),
        ("the strong tier", report.strong_model, report.all_strong, report.saving_vs_strong),
    ):
        if baseline is None:
            table.add_row(name, model, "no price", "-")
        else:
            table.add_row(name, model, money(baseline), saved(saving))
    caption = [
        f"{report.priced} of {report.messages} messages priced"
        f" ({report.prompt_tokens} prompt + {report.completion_tokens} completion tokens)",
        f"{report.without_usage} without usage (not counted)",
    ]
    caption += [
        f"{n} of unpriced model {model} (not counted)" for model, n in report.unpriced.items()
    ]
    table.caption = "; ".join(caption)
    table.caption_justify = "left"
    return table


def agreement_table(agreement: ShadowAgreement) -> Table:
    table = Table(title="shadow agreement: local signal vs the LLM, on tier", title_justify="left")
    for column in ("LLM said", "n", "same tier", "upgrades", "downgrades", "same category"):
        table.add_column(column, justify="left" if column == "LLM said" else "right")

    def row(counts: AgreementCount, style: str | None = None) -> None:
        table.add_row(
            counts.name,
            str(counts.compared),
            f"{pct(counts.tier_rate)} ({counts.same_tier})",
            f"{pct(counts.rate(counts.upgrades))} ({counts.upgrades})",
            f"{pct(counts.rate(counts.downgrades))} ({counts.downgrades})",
            f"{pct(counts.rate(counts.same_category))} ({counts.same_category})",
            style=style,
        )

    for counts in agreement.per_category.values():
        row(counts)
    table.add_section()
    row(agreement.overall, "bold")
    bars = f"{agreement.min_confidence:g}, {agreement.context_min_confidence:g} if swayed"
    confident = dataclasses.replace(
        agreement.confident, name=f"confidence >= {bars} (would go live)"
    )
    row(confident)
    table.caption = (
        "upgrade: the local signal chose a stronger tier than the LLM (costs money);"
        " downgrade: a weaker one (the user sees it)"
    )
    table.caption_justify = "left"
    return table


async def run_stats(args: argparse.Namespace, config: CrabbotConfig) -> int:
    out, err = consoles()
    now = time.time()
    try:
        since = parse_since(args.since, now)
    except ValueError as exc:
        err.print(f"error: {exc}", highlight=False, markup=False)
        return 2
    title = window_title(args.since)
    conn = await open_store(config)
    try:
        summary = await routing_stats.summary(conn, since)
        cost = await cost_report(conn, config, since)
        agreement = await shadow_agreement(
            conn, config.local.min_confidence, config.context.min_confidence, since
        )
        mode = await get_setting(conn, "routing_mode") or config.routing.mode
        if args.plot is not None:
            from router.analytics.charts import stats_chart, write_png

            write_png(args.plot, await stats_chart(conn, config, since, f"crabbot, {title}"))
    finally:
        await conn.close()
    if args.json:
        data = {
            "window": args.since,
            "since": since,
            "mode": mode,
            "summary": dataclasses.asdict(summary),
            "cost": cost.to_json(),
            "shadow_agreement": agreement.to_json(),
        }
        print(json.dumps(data, ensure_ascii=False))
        return 0
    out.print(f"[bold]crabbot routing[/bold] · mode {mode} · map {config.taxonomy.version}")
    for line in format_summary(title, summary):
        out.print(line, highlight=False, markup=False)
    out.print(cost.line(), highlight=False, markup=False)
    out.print(cost_table(cost))
    if agreement.overall.compared:
        out.print(agreement_table(agreement))
    else:
        out.print(
            "shadow agreement: no message yet where both the LLM and the local signal answered"
        )
    if args.plot is not None:
        out.print(f"chart drawn to {args.plot}", highlight=False)
    return 0
