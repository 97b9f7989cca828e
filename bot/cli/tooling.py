"""Plumbing shared by the operator commands (pool, taxonomy, stats): the database without the
router's start checks, the embedder, a progress bar on stderr, and small formatters. rich is
imported only where something is drawn: `crabbot route --json` never needs it."""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from typing import TYPE_CHECKING, Any

from bot.config import CrabbotConfig
from bot.memory import Memory
from router import ModelRouter
from router.embedding.embedder import Embedder, build_embedder
from router.store.database import Database, open_database
from router.store.migrations import migrate
from router.store.schema import ROUTER_MIGRATIONS

if TYPE_CHECKING:
    from rich.console import Console

StageProgress = Callable[[str, int, int], None]
# Shipped vectors are copied in a second; another embedder embeds the pool: one label for both.
SEED_STAGE = "seeding the pool"


async def open_store(config: CrabbotConfig) -> Database:
    """The database, migrated; unlike open_router it neither seeds nor checks the taxonomy
    (the taxonomy commands exist to repair a mismatch)."""
    conn = await open_database(config.database)
    try:
        await migrate(conn, "router", ROUTER_MIGRATIONS)
    except BaseException:
        await conn.close()
        raise
    return conn


@contextlib.asynccontextmanager
async def store_with_memory(config: CrabbotConfig) -> AsyncIterator[tuple[Database, Memory]]:
    """The database and the conversation memory in it, both closed on the way out: the memory's
    writer has a connection of its own, and left open the process never exits."""
    conn = await open_store(config)
    try:
        memory = await Memory.open(conn, config.memory)
        try:
            yield conn, memory
        finally:
            await memory.close()
    finally:
        await conn.close()


async def load_embedder(config: CrabbotConfig) -> Embedder:
    return await asyncio.to_thread(build_embedder, config.embedding)


@contextlib.contextmanager
def progress_bar(err: Console) -> Iterator[StageProgress]:
    """Yield update(stage, done, total); each stage gets its own bar (drawn on a terminal only)."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err,
        transient=True,
        disable=not err.is_terminal,
    )
    tasks: dict[str, Any] = {}

    def update(stage: str, done: int, total: int) -> None:
        if stage not in tasks:
            tasks[stage] = progress.add_task(stage, total=total)
        progress.update(tasks[stage], completed=done, total=total)

    with progress:
        yield update


@contextlib.contextmanager
def seed_progress(err: Console | None = None) -> Iterator[Callable[[int, int], None]]:
    """update(done, total) for the one-time embedding of the seed pool, as a bar on stderr
    (`err`, or a stderr console made then); nothing is drawn, or imported, until a report."""
    with contextlib.ExitStack() as stack:
        bar: StageProgress | None = None

        def update(done: int, total: int) -> None:
            nonlocal bar
            if bar is None:
                bar = stack.enter_context(progress_bar(err or stderr_console()))
            bar(SEED_STAGE, done, total)

        yield update


class SeedBar:
    """The same bar for a command that goes on long after seeding (the proxy): it opens on the
    first report and closes with the last."""

    def __init__(self, err: Console) -> None:
        self._err = err
        self._bar: contextlib.AbstractContextManager[StageProgress] | None = None
        self._update: StageProgress | None = None

    def __call__(self, done: int, total: int) -> None:
        if self._bar is None:
            self._bar = progress_bar(self._err)
            self._update = self._bar.__enter__()
        assert self._update is not None
        self._update(SEED_STAGE, done, total)
        if done >= total:
            self._bar.__exit__(None, None, None)


def note_missing_categorizer(router: ModelRouter) -> None:
    """Once at start: no Groq key is a configuration, and the person starting crabbot should
    know what it means."""
    if router.mode != "off" and router.categorizer is None and router.categorizer_missing:
        print(
            f"note: {router.categorizer_missing}: the LLM categorizer is off, so the local"
            " signal decides alone",
            file=sys.stderr,
        )


def stderr_console() -> Console:
    from rich.console import Console

    return Console(stderr=True)


def consoles() -> tuple[Console, Console]:
    """(stdout, stderr) consoles; messages are not wrapped, tables fit the terminal."""
    from rich.console import Console

    return Console(soft_wrap=True), Console(stderr=True, soft_wrap=True)


def pct(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{100 * value:.{digits}f}%"


def dry_run_note(console: Console) -> None:
    console.print("[yellow]dry run[/yellow]: nothing was changed; add --apply to do it")
