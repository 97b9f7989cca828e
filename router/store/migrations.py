"""Ordered migrations, one list per dialect for each component (router, bot), applied once under
the backend's migration lock; a database from a newer crabbot refuses to start."""

from __future__ import annotations

from typing import NamedTuple

from router.config import ConfigError
from router.store.database import Database


class Migrations(NamedTuple):
    sqlite: tuple[str, ...]
    postgresql: tuple[str, ...]


async def migrate(db: Database, component: str, migrations: Migrations) -> int:
    """Apply the migrations of `component` not yet applied, in order; return its schema version.
    N processes starting at once: the first applies them, the others find them applied."""
    scripts = getattr(migrations, db.dialect)
    async with db.migration_lock():
        await db.execute(
            "CREATE TABLE IF NOT EXISTS schema_versions"
            " (component TEXT PRIMARY KEY, version INTEGER)"
        )
        row = await db.fetch_one(
            "SELECT version FROM schema_versions WHERE component = ?", (component,)
        )
        current = int(row[0]) if row else 0
        if current > len(scripts):
            raise ConfigError(
                f"database schema for {component} is version {current}, newer than this crabbot "
                f"({len(scripts)}): upgrade crabbot"
            )
        for version in range(current + 1, len(scripts) + 1):
            await db.run_script(
                scripts[version - 1]
                + f";\nINSERT INTO schema_versions VALUES ('{component}', {version})"
                " ON CONFLICT(component) DO UPDATE SET version = excluded.version;"
            )
    # A file put back under the running process gets the same before it is written to.
    db.check_on_reopen(f"{component} migrations", lambda new: migrate(new, component, migrations))
    return len(scripts)
