"""`crabbot pool validate|import|check-compat|dedupe|review|purge`: measure the pool, move it
between databases, tidy it, and keep what it learns honest (bot/cli/pool_review.py). Commands
that change stored data are dry runs unless --apply."""

from __future__ import annotations

import argparse
import json

from rich.console import Console
from rich.table import Table

from bot.cli.tooling import (
    consoles,
    dry_run_note,
    load_embedder,
    open_store,
    pct,
    progress_bar,
    seed_progress,
)
from bot.config import CrabbotConfig
from router.analytics.calibration import Calibrated
from router.analytics.pool_ops import (
    PoolToolError,
    apply_dedupe,
    apply_import,
    check_compat,
    embed_missing,
    embedder_counts,
    plan_dedupe,
    plan_import,
    read_pool,
)
from router.analytics.validation import ValidationReport, validate
from router.embedding.embedder import Embedder
from router.pool.pool import Pool
from router.pool.seed import seed_pool
from router.store.database import Database
from router.taxonomy import Taxonomy


async def run_pool(args: argparse.Namespace, config: CrabbotConfig) -> int:
    out, err = consoles()
    if args.pool_command in ("review", "purge"):  # no model needed
        from bot.cli.pool_review import run_purge, run_review

        conn = await open_store(config)
        try:
            run = run_review if args.pool_command == "review" else run_purge
            return await run(args, conn, out)
        finally:
            await conn.close()
    embedder = await load_embedder(config)
    conn = await open_store(config)
    try:
        if args.pool_command in ("validate", "dedupe"):
            await seed(conn, config, embedder, err)
        if args.pool_command == "validate":
            return await _validate(args, config, conn, embedder, out, err)
        if args.pool_command == "import":
            return await _import(args, config, conn, embedder, out, err)
        if args.pool_command == "check-compat":
            return await _check_compat(args, embedder, out, err)
        return await _dedupe(args, config, conn, embedder, out, err)
    except PoolToolError as exc:
        err.print(f"error: {exc}", highlight=False, markup=False)
        return 2
    finally:
        await conn.close()


async def seed(conn: Database, config: CrabbotConfig, embedder: Embedder, err: Console) -> None:
    """The seed entries the pool was never given (all of them to a fresh database, a release's
    new ones later) are added here as on any start (the same bar)."""
    if not config.pool.seed:
        return
    pool = Pool(conn, embedder.id, embedder.dim)
    await pool.load()
    with seed_progress(err) as update:
        await seed_pool(pool, embedder, config.build_taxonomy(), update)


# -- validate ------------------------------------------------------------------------------------


async def validation_report(
    conn: Database,
    config: CrabbotConfig,
    embedder_id: str,
    dim: int,
    taxonomy: Taxonomy,
    err: Console,
    relabel: dict[str, str] | None = None,
    folds: int = 10,
) -> ValidationReport:
    """Validate the stored pool (optionally with some labels renamed) under `taxonomy`."""
    pool = await read_pool(conn, embedder_id, dim)
    if not len(pool):
        raise PoolToolError(
            f"the pool of embedder {embedder_id} is empty: start crabbot once to seed it"
        )
    labels = [(relabel or {}).get(c, c) for c in pool.categories]
    unknown = sorted(set(labels) - set(taxonomy.categories))
    if unknown:
        raise PoolToolError(
            f"the pool holds categories taxonomy {taxonomy.version} lacks: {', '.join(unknown)};"
            f" run `crabbot taxonomy merge {unknown[0]} <category>` first"
        )
    with progress_bar(err) as update:
        return validate(
            pool.vectors,
            labels,
            taxonomy,
            texts=pool.texts,
            k=config.local.k,
            threshold=config.local.min_confidence,
            downgrade_cost=config.local.downgrade_cost,
            classifier=config.local.classifier,
            folds=folds,
            progress=update,
        )


def print_calibration(calibrated: Calibrated, name: str, out: Console) -> None:
    """Does the confidence mean probability, and what does live mode's threshold buy?"""
    table = Table(
        title=(
            f"reliability ({name}; confidence = the chosen tier's probability; expected"
            f" calibration error {calibrated.expected_calibration_error:.3f})"
        ),
        title_justify="left",
    )
    for column in ("confidence", "n", "mean confidence", "tier accuracy"):
        table.add_column(column, justify="right")
    for b in calibrated.bins:
        table.add_row(f"{b.low:.1f}-{b.high:.1f}", str(b.count), pct(b.confidence), pct(b.accuracy))
    out.print(table)
    accuracy = calibrated.alone_tier_accuracy
    out.print(
        f"at min_confidence {calibrated.threshold:g}, the local signal decides"
        f" {pct(calibrated.alone_share)} alone ({calibrated.alone}/{calibrated.n}) with tier"
        f" accuracy {pct(accuracy) if accuracy is not None else '-'}"
        f" ({calibrated.alone_tier_correct}/{calibrated.alone}); the rest asks the LLM",
        highlight=False,
    )


def accuracy_table(report: ValidationReport, title: str = "accuracy") -> Table:
    table = Table(title=title, title_justify="left")
    for column in ("classifier", "tier", "category", "tier errors", "upgrades", "downgrades"):
        table.add_column(column, justify="left" if column == "classifier" else "right")
    for index, result in enumerate(report.classifiers):
        name = f"{result.name} (configured)" if index == 0 else result.name
        table.add_row(
            name,
            f"{pct(result.tier_accuracy)} ({result.tier_correct}/{result.n})",
            f"{pct(result.category_accuracy)} ({result.category_correct}/{result.n})",
            str(result.n - result.tier_correct),
            str(result.upgrades),
            str(result.downgrades),
        )
    return table


def print_validation(report: ValidationReport, embedder_id: str, out: Console) -> None:
    default = report.default
    out.print(
        f"[bold]pool validate[/bold] · {report.pool_size} entries · embedder {embedder_id}"
        f" · taxonomy {report.taxonomy_version} · k={report.k}"
        f" · downgrade cost {report.downgrade_cost}",
        highlight=False,
    )
    for result in report.classifiers:
        out.print(f"  {result.name}: {result.method}", highlight=False)
    out.print(accuracy_table(report))

    per = Table(title=f"per category ({default.name})", title_justify="left")
    for column in ("category", "tier", "n", "category", "tier", "upgrades", "downgrades"):
        per.add_column(column, justify="left" if column in ("category", "tier") else "right")
    for score in default.per_category:
        if score.n:
            per.add_row(
                score.category,
                score.tier,
                str(score.n),
                pct(score.category_accuracy),
                pct(score.tier_accuracy),
                str(score.upgrades),
                str(score.downgrades),
            )
    out.print(per)
    if report.calibration is not None:
        print_calibration(report.calibration, default.name, out)

    confusion = Table(
        title=f"confusion ({default.name}; rows: label, columns: predicted)", title_justify="left"
    )
    confusion.add_column("")
    used = [i for i, _ in enumerate(default.categories) if default.confusion[:, i].any()
            or default.confusion[i].any()]  # fmt: skip
    for i in used:
        confusion.add_column(default.categories[i][:8], justify="right")
    for i in used:
        cells = [
            f"[bold]{value}[/bold]" if i == j else (str(value) if value else "·")
            for j, value in ((j, int(default.confusion[i, j])) for j in used)
        ]
        confusion.add_row(default.categories[i], *cells)
    out.print(confusion)

    pairs = Table(title=f"same-tier pairs ({default.name})", title_justify="left")
    for column in ("merge", "into", "tier", "confused", "share of errors", "category", "tier"):
        pairs.add_column(
            column + (" gain" if column in ("category",) else ""),
            justify="left" if column in ("merge", "into") else "right",
        )
    for pair in default.pairs:
        style = "bold" if pair.candidate else None
        pairs.add_row(
            pair.source,
            pair.target,
            pair.tier,
            f"{pair.confused} ({pct(pair.confusion_rate, 0)})",
            pct(pair.error_share, 0),
            f"{100 * pair.category_gain:+.1f} pt",
            f"{100 * pair.tier_gain:+.1f} pt",
            style=style,
        )
    if default.pairs:
        out.print(pairs)
    candidates = default.merge_candidates
    if not candidates:
        out.print("merge candidates: none (no same-tier pair takes each other for a quarter of")
        out.print("  its messages and half of its errors)")
    for pair in candidates:
        out.print(
            f"merge candidate: {pair.source} → {pair.target} ({pair.tier}): they take each other"
            f" for {pct(pair.confusion_rate, 0)} of their messages; merging gains"
            f" {100 * pair.category_gain:+.1f} points of category accuracy."
            f" Dry run: crabbot taxonomy merge {pair.source} {pair.target}",
            highlight=False,
        )


async def _validate(
    args: argparse.Namespace,
    config: CrabbotConfig,
    conn: Database,
    embedder: Embedder,
    out: Console,
    err: Console,
) -> int:
    taxonomy = config.build_taxonomy()
    report = await validation_report(
        conn, config, embedder.id, embedder.dim, taxonomy, err, folds=args.folds
    )
    if args.plot is not None:
        from router.analytics.charts import confusion_png, write_png

        default = report.default
        title = (
            f"{default.name}: tier {pct(default.tier_accuracy)}, category"
            f" {pct(default.category_accuracy)} (n={default.n}, {report.taxonomy_version})"
        )
        write_png(args.plot, confusion_png(list(default.categories), default.confusion, title))
    if args.json:
        data = {"embedder_id": embedder.id, **report.to_json()}
        if args.plot is not None:
            data["plot"] = str(args.plot)
        print(json.dumps(data, ensure_ascii=False))
        return 0
    print_validation(report, embedder.id, out)
    if args.plot is not None:
        out.print(f"confusion matrix drawn to {args.plot}", highlight=False)
    return 0


# -- import ---------------------------------------------------------------------------------------


async def _import(
    args: argparse.Namespace,
    config: CrabbotConfig,
    conn: Database,
    embedder: Embedder,
    out: Console,
    err: Console,
) -> int:
    taxonomy = config.build_taxonomy()
    plan = await plan_import(conn, args.other, embedder.id, embedder.dim, taxonomy, args.reembed)
    table = Table(title=f"pool import from {args.other}", title_justify="left")
    table.add_column("entries")
    table.add_column("count", justify="right")
    table.add_row("read", str(plan.read))
    table.add_row("new", str(len(plan.new)))
    if plan.to_embed:
        table.add_row("  of which embedded again (--reembed)", str(plan.to_embed))
    table.add_row("duplicate (same normalized text)", str(plan.duplicates))
    table.add_row("refused", str(plan.refused_total))
    for reason, count in plan.refused.most_common():
        table.add_row(f"  {reason}", str(count))
    out.print(table)
    if not args.apply:
        dry_run_note(out)
        return 0
    if plan.to_embed:
        with progress_bar(err) as update:
            embed_missing(plan, embedder, lambda done, total: update("embedding", done, total))
    stored = await apply_import(conn, plan)
    out.print(f"imported {stored} entries into the pool of {embedder.id}", highlight=False)
    return 0


# -- check-compat --------------------------------------------------------------------------------


async def _check_compat(
    args: argparse.Namespace, embedder: Embedder, out: Console, err: Console
) -> int:
    with progress_bar(err) as update:
        report = await check_compat(
            args.other,
            embedder,
            sample=args.sample,
            other_embedder_id=args.embedder_id,
            threshold=args.threshold,
            progress=lambda done, total: update("embedding the sample", done, total),
        )
    counts = ", ".join(f"{name} ({n})" for name, n in report.other_counts.items())
    out.print(f"this embedder:  {report.embedder_id}", highlight=False)
    out.print(f"other pool:     {counts}", highlight=False)
    out.print(
        f"compared:       {report.sample} texts of {report.other_embedder_id}", highlight=False
    )
    if report.problem:
        out.print(f"[red]FAIL[/red]: {report.problem}", highlight=False)
        return 1
    assert report.mean is not None and report.minimum is not None
    out.print(f"cosine:         mean {report.mean:.5f} · minimum {report.minimum:.5f}")
    worst = Table(title="least similar", title_justify="left")
    worst.add_column("cosine", justify="right")
    worst.add_column("text")
    for text, cosine in report.worst:
        worst.add_row(f"{cosine:.5f}", text[:70])
    out.print(worst)
    if report.passed:
        out.print(f"[green]PASS[/green]: every cosine is at least {report.threshold}")
        return 0
    out.print(
        f"[red]FAIL[/red]: minimum {report.minimum:.5f} < {report.threshold}: these vectors are"
        " not this embedder's; import with --reembed",
        highlight=False,
    )
    return 1


# -- dedupe ---------------------------------------------------------------------------------------


async def _dedupe(
    args: argparse.Namespace,
    config: CrabbotConfig,
    conn: Database,
    embedder: Embedder,
    out: Console,
    err: Console,
) -> int:
    threshold = args.threshold if args.threshold is not None else config.pool.near_duplicate_cosine
    if not 0.0 < threshold <= 1.0:
        err.print("error: --threshold must be in (0, 1]")
        return 2
    pool = await read_pool(conn, embedder.id, embedder.dim)
    with progress_bar(err) as update:
        plan = plan_dedupe(pool, threshold, progress=lambda d, t: update("comparing", d, t))
    conflicts = plan.label_conflicts()
    out.print(
        f"[bold]pool dedupe[/bold] · {len(pool)} entries of {embedder.id} · cosine >= {threshold}:"
        f" {len(plan.clusters)} clusters, {plan.removed} entries to remove"
        f" ({len(conflicts)} clusters with another label among the removed)",
        highlight=False,
    )
    others = await embedder_counts(conn)
    foreign = sum(n for name, n in others.items() if name != embedder.id)
    if foreign:
        out.print(f"({foreign} entries of other embedders are not compared)")
    if plan.clusters:
        table = Table(title=f"largest clusters (of {len(plan.clusters)})", title_justify="left")
        table.add_column("")
        table.add_column("cosine", justify="right")
        table.add_column("category")
        table.add_column("text")
        for cluster in plan.clusters[: args.show]:
            table.add_row("keep", "", pool.categories[cluster.keep], pool.texts[cluster.keep][:60])
            for index, similarity in cluster.removed:
                table.add_row(
                    "remove", f"{similarity:.3f}", pool.categories[index], pool.texts[index][:60]
                )
            table.add_section()
        out.print(table)
    if not args.apply:
        dry_run_note(out)
        return 0
    removed = await apply_dedupe(conn, plan)
    out.print(f"removed {removed} entries")
    return 0
