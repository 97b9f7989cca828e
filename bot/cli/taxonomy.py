"""`crabbot taxonomy merge FROM TO [--apply]` and `crabbot taxonomy show`: change the categories
of stored data safely (a dry run with row counts and accuracy before and after by default)."""

from __future__ import annotations

import argparse
import json
import time

from rich.console import Console
from rich.table import Table

from bot.cli.pool import validation_report
from bot.cli.tooling import consoles, dry_run_note, load_embedder, open_store, pct
from bot.config import CrabbotConfig
from router.analytics.pool_ops import PoolToolError, embedder_counts
from router.analytics.taxonomy_ops import (
    MergePlan,
    MergeRefused,
    apply_merge,
    get_stored_version,
    plan_merge,
)
from router.analytics.validation import ValidationReport
from router.store.database import Database
from router.store.taxonomy import LOG_CATEGORY_COLUMNS
from router.taxonomy import BUILTIN_MAPPINGS, Taxonomy


async def run_taxonomy(args: argparse.Namespace, config: CrabbotConfig) -> int:
    out, err = consoles()
    conn = await open_store(config)
    try:
        if args.taxonomy_command == "show":
            return await _show(config, conn, out)
        return await _merge(args, config, conn, out, err)
    finally:
        await conn.close()


def config_lines(taxonomy: Taxonomy) -> list[str]:
    """What the [taxonomy] section must say to match the merged data."""
    if BUILTIN_MAPPINGS.get(taxonomy.version) == taxonomy.category_tiers:
        return ["[taxonomy]", f'version = "{taxonomy.version}"']
    pairs = ", ".join(f'{c} = "{t}"' for c, t in taxonomy.category_tiers.items())
    return ["[taxonomy]", f'version = "{taxonomy.version}"', f"map = {{ {pairs} }}"]


def _print_plan(plan: MergePlan, out: Console) -> None:
    out.print(
        f"[bold]taxonomy merge[/bold] {plan.source} → {plan.target}"
        f" ({plan.before.tier_of(plan.source)} → {plan.after.tier_of(plan.target)})"
        f" · taxonomy {plan.before.version} → {plan.after.version}",
        highlight=False,
    )
    table = Table(title="rows to relabel", title_justify="left")
    table.add_column("where")
    table.add_column("rows", justify="right")
    for column in LOG_CATEGORY_COLUMNS:
        table.add_row(f"routing_log.{column}", str(plan.column_counts[f"routing_log.{column}"]))
    table.add_row("routing_log (rows with any of them)", str(plan.log_rows))
    table.add_row("pool (every embedder; vectors untouched)", str(plan.pool_rows))
    out.print(table)


async def _accuracy(
    plan: MergePlan, config: CrabbotConfig, conn: Database, err: Console, folds: int
) -> tuple[ValidationReport, ValidationReport] | str:
    """The pool validated (`folds`-fold) before and after the merge, or why it could not be."""
    embedder = await load_embedder(config)
    try:
        before = await validation_report(
            conn, config, embedder.id, embedder.dim, plan.before, err, folds=folds
        )
        after = await validation_report(
            conn,
            config,
            embedder.id,
            embedder.dim,
            plan.after,
            err,
            {plan.source: plan.target},
            folds=folds,
        )
    except PoolToolError as exc:
        return str(exc)
    return before, after


def _print_accuracy(before: ValidationReport, after: ValidationReport, out: Console) -> None:
    table = Table(title="cross-validated accuracy on the pool", title_justify="left")
    for column in ("classifier", "tier before", "tier after", "category before", "category after"):
        table.add_column(column, justify="left" if column == "classifier" else "right")
    for old in before.classifiers:
        new = after.get(old.name)
        table.add_row(
            old.name,
            pct(old.tier_accuracy),
            pct(new.tier_accuracy),
            pct(old.category_accuracy),
            pct(new.category_accuracy),
        )
    out.print(table)
    for result in before.classifiers:
        out.print(f"  {result.name}: {result.method}", highlight=False)


def _plan_json(plan: MergePlan) -> dict[str, object]:
    return {
        "from": plan.source,
        "to": plan.target,
        "old_version": plan.before.version,
        "new_version": plan.after.version,
        "log_rows": plan.log_rows,
        "pool_rows": plan.pool_rows,
        "rows_by_column": plan.column_counts,
    }


def _accuracy_json(report: ValidationReport) -> dict[str, object]:
    return {
        result.name: {
            "tier_accuracy": round(result.tier_accuracy, 4),
            "category_accuracy": round(result.category_accuracy, 4),
        }
        for result in report.classifiers
    }


async def _merge(
    args: argparse.Namespace,
    config: CrabbotConfig,
    conn: Database,
    out: Console,
    err: Console,
) -> int:
    try:
        plan = await plan_merge(conn, args.source, args.target, config.build_taxonomy())
    except MergeRefused as exc:
        err.print(f"refused: {exc}", highlight=False, markup=False)
        return 2
    data: dict[str, object] = {**_plan_json(plan), "applied": args.apply}
    if not args.json:
        _print_plan(plan, out)
    if not args.apply:
        accuracy = await _accuracy(plan, config, conn, err, args.folds)
        if args.json:
            if isinstance(accuracy, str):
                data["accuracy"] = {"not_measured": accuracy}
            else:
                data["accuracy"] = {
                    "before": _accuracy_json(accuracy[0]),
                    "after": _accuracy_json(accuracy[1]),
                }
            print(json.dumps(data, ensure_ascii=False))
            return 0
        if isinstance(accuracy, str):
            out.print(f"accuracy: not measured ({accuracy})", highlight=False)
        else:
            _print_accuracy(*accuracy, out)
        dry_run_note(out)
        return 0
    audit_id = await apply_merge(conn, plan)
    follow = plan.source in config.build_taxonomy().category_tiers
    if args.json:
        data |= {"audit_id": audit_id, "config": config_lines(plan.after) if follow else []}
        print(json.dumps(data, ensure_ascii=False))
        return 0
    out.print(
        f"merged {plan.source} into {plan.target}: {plan.log_rows} routing-log rows and"
        f" {plan.pool_rows} pool rows relabelled in one transaction; stored taxonomy version"
        f" {plan.after.version} (audit row {audit_id})",
        highlight=False,
    )
    if follow:
        out.print("Now make the config match the data (crabbot refuses to start until it does):")
        for line in config_lines(plan.after):
            out.print(f"  {line}", highlight=False, markup=False)
    return 0


async def _show(config: CrabbotConfig, conn: Database, out: Console) -> int:
    taxonomy = config.build_taxonomy()
    stored = await get_stored_version(conn)
    out.print(
        f"config taxonomy {taxonomy.version} · stored rows follow {stored or '(no merge yet)'}",
        highlight=False,
    )
    pool_counts = {
        row[0]: int(row[1])
        for row in await conn.fetch_all("SELECT category, COUNT(*) FROM pool GROUP BY 1")
    }
    log_counts = {
        row[0]: int(row[1])
        for row in await conn.fetch_all(
            "SELECT category, COUNT(*) FROM routing_log WHERE category IS NOT NULL GROUP BY 1"
        )
    }
    table = Table(title="categories", title_justify="left")
    for column in ("category", "tier", "pool", "routing log"):
        table.add_column(column, justify="right" if column in ("pool", "routing log") else "left")
    for category in [*taxonomy.categories, *sorted(set(pool_counts) - set(taxonomy.categories))]:
        tier = taxonomy.category_tiers.get(category, "[red]not in config[/red]")
        table.add_row(
            category, tier, str(pool_counts.get(category, 0)), str(log_counts.get(category, 0))
        )
    out.print(table)
    embedders = await embedder_counts(conn)
    out.print("pool by embedder: " + (", ".join(f"{k} ({v})" for k, v in embedders.items()) or "-"))
    audit = await conn.fetch_all("SELECT * FROM taxonomy_audit ORDER BY id")
    if audit:
        history = Table(title="audit", title_justify="left")
        for column in ("when", "action", "from", "to", "log rows", "pool rows", "version"):
            history.add_column(column)
        for row in audit:
            history.add_row(
                time.strftime("%Y-%m-%d %H:%M", time.localtime(row["at"])),
                row["action"],
                row["from_category"] or "-",
                row["to_category"] or "-",
                str(row["log_rows"]),
                str(row["pool_rows"]),
                f"{row['old_version']} → {row['new_version']}",
            )
        out.print(history)
    return 0
