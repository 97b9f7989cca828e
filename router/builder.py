"""Assembles a ModelRouter from ready parts: opens and migrates the database, loads the embedding
model (on its own thread, meanwhile), the pool, the stored mode and the categorizer, then hands
them to the router and loads or fits its classifier (once for processes starting at once)."""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import Sequence
from typing import Any

from router.cluster.shared_state import SharedState
from router.config import RouterConfig, Secrets
from router.embedding.blas import one_blas_thread_for_the_process
from router.embedding.embedder import Embedder, build_embedder
from router.pool.pool import Pool, read_rows
from router.pool.seed import ProgressCallback, seed_pool
from router.router import ModelRouter
from router.signals.categorizer import LLMCategorizer
from router.store import routing_log
from router.store.database import Database, DatabaseError, open_database
from router.store.erasure_notices import latest_notice
from router.store.fit_lock import FileFitLock
from router.store.migrations import migrate
from router.store.schema import ROUTER_MIGRATIONS
from router.store.settings import StoredMode
from router.store.spool import Spool, SpoolReplay, spool_folder
from router.store.taxonomy import check_taxonomy_matches_store
from router.taxonomy import Mode

log = logging.getLogger(__name__)


async def _settle(*started: asyncio.Future[Any] | None) -> None:
    """A start that failed waits for the work it began; an embedder it built is closed (its
    thread with it)."""
    for future in started:
        if future is None:
            continue
        try:
            done = await asyncio.shield(future)
        except BaseException:  # its own failure, or this start cancelled: nothing to close
            continue
        if isinstance(done, Embedder):
            done.close()


async def open_router(
    config: RouterConfig,
    secrets: Secrets | None = None,
    *,
    embedder: Embedder | None = None,
    mode_override: Mode | None = None,
    progress: ProgressCallback | None = None,
    first_texts: Sequence[str] = (),
) -> ModelRouter:
    """Open the database and the signals. `first_texts`, the messages the caller will route
    first (`crabbot route "..."`), are embedded on the embedder's thread while the pool and
    the classifier load, so the first decision finds them in the cache."""
    secrets = secrets or Secrets()
    # The model loads on the embedder's own thread (in C, without the GIL) while the
    # database is opened, migrated and checked and the pool's rows are read.
    loading, warming = None, None
    if config.local.enabled:
        one_blas_thread_for_the_process()
        if embedder is None:
            loading = asyncio.ensure_future(asyncio.to_thread(build_embedder, config.embedding))
    try:
        conn = await open_database(config.database)
    except BaseException:
        await _settle(loading)
        raise
    try:
        await migrate(conn, "router", ROUTER_MIGRATIONS)
        taxonomy = config.build_taxonomy()
        await check_taxonomy_matches_store(conn, taxonomy)
        conn.check_on_reopen("taxonomy", lambda new: check_taxonomy_matches_store(new, taxonomy))
        stored = await StoredMode.read(conn, config.routing.mode)
        notices_seen = await latest_notice(conn)  # what the pool read next knows of erasures
        pool: Pool | None = None
        if config.local.enabled:
            rows = None
            if loading is not None:
                rows = await read_rows(conn)  # every embedder's: this one is not known yet
                embedder = await loading
            assert embedder is not None
            if (mode_override or stored) != "off" and any(t.strip() for t in first_texts):
                warming = asyncio.gather(
                    *(embedder.aembed_message(text) for text in first_texts if text.strip())
                )
            pool = Pool(conn, embedder.id, embedder.dim)
            await pool.load(rows)
            if config.pool.seed:  # the seed entries it was never given: all, or a release's new
                await seed_pool(pool, embedder, taxonomy, progress)
        else:
            embedder = None
        categorizer, missing = None, None
        if config.categorizer.enabled:
            if secrets.groq_api_key:
                categorizer = LLMCategorizer(config.categorizer, taxonomy, secrets.groq_api_key)
            else:
                missing = "GROQ_API_KEY is not set"
    except BaseException:
        await conn.close()
        await _settle(warming, loading)
        raise
    router = ModelRouter(config, conn, embedder, pool, categorizer, missing, stored, mode_override)
    router.erasures.start(notices_seen)
    try:
        await _start(router, conn)
    except BaseException:  # its writers, threads and connections go with it
        await router.close()
        await _settle(warming, loading)
        raise
    if warming is not None:
        try:
            await warming
        except Exception:  # the first route meets the same failure, and handles it
            log.debug("could not embed the first messages ahead", exc_info=True)
    # What the start made (modules, the pool's lists, the classifier) lives as long as the
    # process: out of the collector's way, a full collection while routing (one took 90 ms
    # during a refit on 2 busy cores) traverses only what was made since. router.close undoes it.
    gc.freeze()
    return router


async def _start(router: ModelRouter, conn: Database) -> None:
    await router.log.writer.start(conn)
    await router.pool_writer.start(conn)
    await _start_spool(router, conn)  # before marking: a killed process's rows end open ones
    await _mark_interrupted(router, conn)
    router.retention.start()
    # First what the processes on the database share, so that processes starting at once
    # fit once: one fits (under the fit's lock) and the others load its fit.
    router.shared = await SharedState.start(router)  # None on SQLite
    if router.fitting is not None:
        lock = router.shared or (FileFitLock(conn.file_path) if conn.file_path else None)
        await router.fitting.start(lock)


async def _start_spool(router: ModelRouter, conn: Database) -> None:
    """The routing log's crash spool: this process's own file, then the rows processes killed
    on this data folder left unwritten, written now."""
    folder = spool_folder(router.config.database)
    if folder is None:  # in memory: nobody could read the rows after a kill anyway
        return
    spool = Spool(folder, router.counters)
    if spool.open():
        router.log.writer.spool = spool
    router.log.replay = SpoolReplay(
        folder, conn, routing_log.REPLAY_SQL, len(routing_log.COLUMNS), router.counters
    )
    await router.log.replay.start()  # refused (the database restarting): retried meanwhile


async def _mark_interrupted(router: ModelRouter, conn: Database) -> None:
    """Requests still open when crabbot last stopped are logged as interrupted."""
    try:
        interrupted = await routing_log.mark_interrupted(conn)
    except DatabaseError:  # a locked file: the rows stay open; the router still starts
        log.exception("could not mark the requests open at the last stop as interrupted")
        router.counters["db_errors"] += 1
        interrupted = 0
    if interrupted:
        log.warning(
            "%d requests were open when crabbot last stopped: logged as interrupted",
            interrupted,
        )
