"""The categories the stored rows name, and those `crabbot taxonomy merge` merged away: checked
against the config's taxonomy at start, so the pool, the log and the map never disagree."""

from __future__ import annotations

from router.config import ConfigError
from router.store.database import Database
from router.taxonomy import Taxonomy

LOG_CATEGORY_COLUMNS = ("category", "llm_category", "knn_category", "prior_category")


def _distinct_sql(table: str, column: str) -> str:
    """The distinct values of an indexed column, one index seek each (the next value above the
    last), instead of a pass over every row: the log grows with every message."""
    return (
        "WITH RECURSIVE seen(value) AS ("
        f" SELECT MIN({column}) FROM {table} WHERE {column} IS NOT NULL"
        " UNION ALL"
        f" SELECT (SELECT MIN({column}) FROM {table} WHERE {column} > seen.value)"
        " FROM seen WHERE seen.value IS NOT NULL"
        ") SELECT value FROM seen WHERE value IS NOT NULL"
    )


async def stored_categories(conn: Database) -> set[str]:
    """Every category named by the pool or by any category column of the routing log."""
    found: set[str] = set()
    for table, column in (
        ("pool", "category"),
        *(("routing_log", c) for c in LOG_CATEGORY_COLUMNS),
    ):
        found |= {row[0] for row in await conn.fetch_all(_distinct_sql(table, column))}
    return found


async def merged_away(conn: Database) -> dict[str, tuple[str, str]]:
    """Categories merged away by `crabbot taxonomy merge`: name -> (merged into, new version)."""
    return {
        row[0]: (row[1], row[2])
        for row in await conn.fetch_all(
            "SELECT from_category, to_category, new_version FROM taxonomy_audit"
            " WHERE action = 'merge' ORDER BY id"
        )
    }


async def check_taxonomy_matches_store(conn: Database, taxonomy: Taxonomy) -> None:
    """The pool and the routing log must only name categories the config has, and the config
    must not bring back a category `crabbot taxonomy merge` merged away."""
    missing = sorted(await stored_categories(conn) - set(taxonomy.categories))
    if missing:
        raise ConfigError(
            f"the stored pool or routing log holds categories this taxonomy ({taxonomy.version})"
            f" lacks: {', '.join(missing)}; run `crabbot taxonomy merge {missing[0]} <category>`"
            " or choose a taxonomy that has them"
        )
    for category, (target, version) in (await merged_away(conn)).items():
        if category in taxonomy.category_tiers:
            raise ConfigError(
                f"{category} was merged into {target} by `crabbot taxonomy merge` (the stored rows"
                f" follow taxonomy {version}): remove {category} from [taxonomy] and set"
                f' version = "{version}"'
            )
