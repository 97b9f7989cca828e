"""`crabbot pool review` and `crabbot pool purge`: the labels the learning gate held back (show,
accept, reject), and removing everything one origin (a chat, a client key) taught the pool."""

from __future__ import annotations

import argparse
import datetime as dt

from rich.console import Console
from rich.table import Table

from bot.cli.tooling import dry_run_note
from router.analytics import quarantine
from router.store.database import Database

RESTART_NOTE = "a running bot or proxy sees the change at its next start"


async def run_review(args: argparse.Namespace, conn: Database, out: Console) -> int:
    origin = args.source
    if args.accept or args.accept_all:
        ids = None if args.accept_all else args.accept
        added = await quarantine.accept(conn, ids, origin)
        out.print(f"accepted: {added} labels entered the pool ({RESTART_NOTE})")
    if args.reject or args.reject_all:
        ids = None if args.reject_all else args.reject
        removed = await quarantine.reject(conn, ids, origin)
        out.print(f"rejected: {removed} labels dropped")
    counts = await quarantine.held_by_origin(conn)
    total = sum(counts.values())
    shown = await quarantine.held(conn, origin, args.show)
    out.print(
        f"[bold]pool quarantine[/bold] · {total} labels waiting"
        + (f" · {origin}: {counts.get(origin, 0)}" if origin else ""),
        highlight=False,
    )
    if not origin and counts:
        out.print(
            "by origin: " + ", ".join(f"{name} {n}" for name, n in list(counts.items())[:8]),
            highlight=False,
            markup=False,
        )
    if shown:
        table = Table(title_justify="left")
        for column in ("id", "when (UTC)", "origin", "label", "local signal", "why", "text"):
            table.add_column(column)
        for row in shown:
            when = dt.datetime.fromtimestamp(row.at, dt.UTC).strftime("%Y-%m-%d %H:%M")
            local = (
                f"{row.local_category} {row.local_confidence:.2f}"
                if row.local_category is not None and row.local_confidence is not None
                else "-"
            )
            table.add_row(
                str(row.id),
                when,
                row.origin,
                f"{row.category} {row.confidence or 0:.2f}",
                local,
                row.reason,
                row.text[:60].replace("\n", " "),
            )
        out.print(table)
        out.print(
            "accept with --accept ID... or --accept-all, reject with --reject ID... or"
            " --reject-all (--source narrows to one origin)",
            highlight=False,
        )
    return 0


async def run_purge(args: argparse.Namespace, conn: Database, out: Console) -> int:
    origin = args.source
    pooled, waiting = await quarantine.origin_counts(conn, origin)
    out.print(
        f"[bold]pool purge[/bold] · {origin}: {pooled} pool entries, {waiting} quarantined labels",
        highlight=False,
    )
    if not pooled and not waiting:
        top = await quarantine.top_origins(conn)
        if top:
            out.print(
                "origins that taught the pool: " + ", ".join(f"{o} {n}" for o, n in top),
                highlight=False,
                markup=False,
            )
        return 0
    if not args.apply:
        dry_run_note(out)
        return 0
    pooled, waiting = await quarantine.purge(conn, origin)
    out.print(f"removed {pooled} pool entries and {waiting} quarantined labels ({RESTART_NOTE})")
    return 0
