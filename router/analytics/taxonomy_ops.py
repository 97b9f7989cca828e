"""Taxonomy changes on stored data: merge one category into another (routing log and pool, in
one transaction, with an audit row and a stored tier-mapping version), refusing unsafe merges."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass

from router.store.database import Database
from router.store.taxonomy import LOG_CATEGORY_COLUMNS, stored_categories
from router.taxonomy import BUILTIN_MAPPINGS, TIERS, UNKNOWN, Taxonomy

# The version the stored rows follow after the last `crabbot taxonomy merge` (absent before any).
STORED_VERSION_KEY = "tier_mapping_version"


class MergeRefused(Exception):
    """A merge that would break the taxonomy; the message says why."""


@dataclass(frozen=True)
class MergePlan:
    source: str
    target: str
    before: Taxonomy  # the config's map, plus the source when only the stored rows still have it
    after: Taxonomy
    stored_version: str | None
    log_rows: int  # routing-log rows with the source in any category column
    pool_rows: int  # pool rows of every embedder
    column_counts: dict[str, int]


def next_version(current: str, mapping: dict[str, str]) -> str:
    """The name of the merged map: a built-in one it equals, else the current name's number plus
    one ("v2" -> "v3", "home" -> "home2"), skipping built-in names."""
    for name, builtin in BUILTIN_MAPPINGS.items():
        if builtin == mapping:
            return name
    match = re.fullmatch(r"(.*?)(\d+)", current)
    stem, number = (match.group(1), int(match.group(2))) if match else (current, 1)
    candidate = f"{stem}{number + 1}"
    while candidate in BUILTIN_MAPPINGS:
        number += 1
        candidate = f"{stem}{number + 1}"
    return candidate


async def _count(conn: Database, sql: str, params: tuple[object, ...]) -> int:
    row = await conn.fetch_one(sql, params)
    return int(row[0]) if row is not None else 0


async def get_stored_version(conn: Database) -> str | None:
    row = await conn.fetch_one("SELECT value FROM settings WHERE key = ?", (STORED_VERSION_KEY,))
    return str(row[0]) if row else None


def _source_tier(source: str, target: str, taxonomy: Taxonomy) -> str:
    if source in taxonomy.category_tiers:
        return taxonomy.tier_of(source)
    for mapping in BUILTIN_MAPPINGS.values():
        if source in mapping:
            return mapping[source]
    return taxonomy.tier_of(target)


async def plan_merge(conn: Database, source: str, target: str, taxonomy: Taxonomy) -> MergePlan:
    """Check the merge against the config's taxonomy and count what it would change."""
    names = ", ".join(taxonomy.categories)
    if source == target:
        raise MergeRefused(f"cannot merge {source} into itself")
    if target not in taxonomy.category_tiers:
        raise MergeRefused(
            f"{target} is not a category of taxonomy {taxonomy.version} ({names}): merge into one"
            " of those"
        )
    if target == UNKNOWN or source == UNKNOWN:
        raise MergeRefused(
            f"{UNKNOWN} is reserved for messages that cannot be read at all (the safe default);"
            " it cannot be merged into or away"
        )
    stored = await stored_categories(conn)
    if source not in taxonomy.category_tiers and source not in stored:
        raise MergeRefused(
            f"{source} is neither in taxonomy {taxonomy.version} ({names}) nor in the stored"
            " rows: nothing to merge"
        )
    before_map = dict(taxonomy.category_tiers)
    before_map.setdefault(source, _source_tier(source, target, taxonomy))
    after_map = {c: t for c, t in before_map.items() if c != source}
    emptied = [
        tier for tier in TIERS if tier in before_map.values() and tier not in after_map.values()
    ]
    if emptied:
        raise MergeRefused(
            f"merging {source} into {target} would leave tier {emptied[0]} with no category"
        )
    stored_version = await get_stored_version(conn)
    if source in taxonomy.category_tiers:
        after_version = next_version(taxonomy.version, after_map)
    else:  # the config already lacks the source: it names the map the rows are moving to
        after_version = taxonomy.version
    named = [name for name, mapping in BUILTIN_MAPPINGS.items() if mapping == before_map]
    before_version = named[0] if named else stored_version or taxonomy.version
    counts: dict[str, int] = {}
    for column in LOG_CATEGORY_COLUMNS:
        sql = f"SELECT COUNT(*) FROM routing_log WHERE {column} = ?"
        counts[f"routing_log.{column}"] = await _count(conn, sql, (source,))
    where = " OR ".join(f"{column} = ?" for column in LOG_CATEGORY_COLUMNS)
    log_rows = await _count(
        conn,
        f"SELECT COUNT(*) FROM routing_log WHERE {where}",
        (source,) * len(LOG_CATEGORY_COLUMNS),
    )
    pool_rows = await _count(conn, "SELECT COUNT(*) FROM pool WHERE category = ?", (source,))
    counts["pool.category"] = pool_rows
    return MergePlan(
        source=source,
        target=target,
        before=Taxonomy(before_version, before_map),
        after=Taxonomy(after_version, after_map),
        stored_version=stored_version,
        log_rows=log_rows,
        pool_rows=pool_rows,
        column_counts=counts,
    )


async def apply_merge(conn: Database, plan: MergePlan, at: float | None = None) -> int:
    """Relabel the routing log's category columns and the pool, store the new version and write
    the audit row, all in one transaction. Tier, model and each row's tier_mapping_version stay
    as routed: they record what was paid for, under which map. Returns the audit row id."""
    now = time.time() if at is None else at
    async with conn.transaction():
        for column in LOG_CATEGORY_COLUMNS:
            await conn.execute(
                f"UPDATE routing_log SET {column} = ? WHERE {column} = ?",
                (plan.target, plan.source),
            )
        await conn.execute(
            "UPDATE pool SET category = ? WHERE category = ?", (plan.target, plan.source)
        )
        await conn.execute(
            "INSERT INTO settings (key, value, updated_at) VALUES (?, ?, ?) ON CONFLICT(key)"
            " DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
            (STORED_VERSION_KEY, plan.after.version, now),
        )
        row = await conn.fetch_one(
            "INSERT INTO taxonomy_audit (at, action, from_category, to_category, log_rows,"
            " pool_rows, old_version, new_version) VALUES (?, 'merge', ?, ?, ?, ?, ?, ?)"
            " RETURNING id",
            (
                now,
                plan.source,
                plan.target,
                plan.log_rows,
                plan.pool_rows,
                plan.before.version,
                plan.after.version,
            ),
        )
        audit_id = int(row[0]) if row else 0
    return audit_id
