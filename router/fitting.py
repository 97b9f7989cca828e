"""Fitting the local classifier on the pool, off the event loop (a refit in a child process at idle
priority, so it never stalls routing), and keeping what was fitted (the classifier and its
cross-validated calibration) in the store under the fingerprint of the rows it was fit on, so a
restart, or another process, on the same pool loads it instead of fitting again; processes
starting at once on one database fit once (one holds the fit's lock, the others load its fit)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import Protocol

from router.counters import Counters
from router.pool.pool import PoolSnapshot, give_back_free_memory
from router.pool.seed import shipped_calibration
from router.pool.vector_index import EXACT_LIMIT
from router.signals.calibration import SERVES_GROWTH, Calibration
from router.signals.fit_process import FitProcessError, fit_in_process
from router.signals.fitted import FittedPool, fit_pool
from router.signals.local_signal import LocalSignal
from router.store import fitted_state, settings
from router.store.database import Database, DatabaseError
from router.taxonomy import Taxonomy

log = logging.getLogger(__name__)

CALIBRATION_KEY = "local_calibration"
STOP_WAIT_S = 10.0  # a stop waits this long for a refit at idle priority, then cancels it
# A start whose fit another process is making waits this long for it (no longer than fitting
# itself would take, as both began at once), then serves without the classifier (the LLM, else
# the default tier) and loads the fit when it is stored.
START_WAIT_S = 30.0
POLL_S = 2.0  # a process waiting for another's fit looks for it at least this often


class RefitClaim(Protocol):
    """With other processes on the database: one of them fits at a time (`claim` is True: this
    one, or it cannot ask), stores the fit and says so (`release`); the others load it when
    their pool matches it. `fit_stored` returns once another process said it stored a fit since
    the last failed claim, or after `timeout_s` (router/cluster/ on PostgreSQL; a lock file
    beside an SQLite file, at start only)."""

    async def claim(self) -> bool: ...
    async def release(self, refitted: bool) -> None: ...
    async def fit_stored(self, timeout_s: float) -> None: ...


class ClassifierFitting:
    """Loads, fits and refits `local.classifier`; one refit at a time."""

    def __init__(
        self,
        conn: Database,
        local: LocalSignal,
        taxonomy: Taxonomy,
        counters: Counters,
    ) -> None:
        self.conn = conn
        self.local = local
        self.taxonomy = taxonomy
        self.counters = counters
        self.refit_task: asyncio.Task[None] | None = None
        self.claim: RefitClaim | None = None
        self.starting = True  # no refit and no adoption until start() has loaded or fit
        self.fingerprint: str | None = None  # of the fit routing uses (None: none stored)
        # Fits made here, and stored fits loaded at start (not counters: nothing went wrong).
        self.fits_computed = 0
        self.fits_loaded = 0

    async def start(self, claim: RefitClaim | None = None) -> None:
        """The stored classifier and calibration when they fit this pool, else a fresh fit:
        with other processes on the database (`claim`), made by one of them, the others
        waiting for it up to START_WAIT_S, then serving without it until it is stored."""
        try:
            if len(self.local.pool):
                await self._start(claim)
        finally:
            self.starting = False

    async def _start(self, claim: RefitClaim | None) -> None:
        kept = await self._stored_calibration()
        # The pool's rows are gone once the store has answered another query (its thread held
        # the last result): give their pages back before the index takes as many again.
        give_back_free_memory()
        calibration = kept or await asyncio.to_thread(shipped_calibration, self.local.pool)
        if claim is None:
            await self.load_or_fit(calibration)
            if kept is None:
                await self._store_calibration()
        else:
            snapshot = self.local.pool.snapshot()
            deadline = asyncio.get_running_loop().time() + START_WAIT_S
            if not await self._fit_shared(claim, snapshot, calibration, kept is None, deadline):
                log.warning(
                    "another process is fitting the classifier: routing without it until it"
                    " is stored (over %.0f s)",
                    START_WAIT_S,
                )
                self.refit_task = asyncio.create_task(
                    self._fit_shared_later(claim, snapshot, calibration, kept is None)
                )
        give_back_free_memory()  # what loading the rows and fitting freed

    def refit_if_grown(self) -> None:
        """Start a refit in the background once the pool has grown by SERVES_GROWTH."""
        trained_on = self.local.classifier.trained_on
        if len(self.local.pool) >= trained_on * SERVES_GROWTH and self._idle:
            self.refit_task = asyncio.create_task(self._refit_claimed())

    def refit(self) -> None:
        """Start a refit in the background now (the pool lost entries: an erasure)."""
        if self._idle:
            self.refit_task = asyncio.create_task(self._refit_claimed())

    @property
    def _idle(self) -> bool:
        return not self.starting and self.refit_task is None

    async def wait(self, timeout_s: float | None = None) -> None:
        """Wait for the refit under way; past `timeout_s` (a stop), cancel it instead: its child
        is killed, and the next start loads or fits what it needs."""
        task = self.refit_task
        if task is None:
            return
        done, _ = await asyncio.wait({task}, timeout=timeout_s)
        if not done:
            log.warning("stopping without the refit under way (over %.0f s)", timeout_s)
            self.counters["refits_cancelled"] += 1
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    async def _refit_claimed(self) -> None:
        """Refit, unless another process on the database is refitting (its fit is adopted when
        it is stored)."""
        claim = self.claim
        if claim is not None and not await claim.claim():
            self.counters["refits_left_to_another_process"] += 1
            self.refit_task = None
            return
        refitted = False
        try:
            await self._refit()
            refitted = True
        finally:
            if claim is not None:
                await claim.release(refitted)

    async def adopt(self) -> bool:
        """Load the classifier another process stored, when it was fit on this very pool (and
        its stored calibration); True when it was."""
        if not self._idle:
            return False
        calibration = await self._stored_calibration()
        if calibration is None:
            return False
        snapshot = await asyncio.to_thread(self.local.pool.snapshot)
        wanted = await asyncio.to_thread(self.local.fingerprint, calibration, snapshot)
        stored = await fitted_state.load(self.conn, wanted)
        if stored is None or not self._idle:
            return False
        loaded = await asyncio.to_thread(FittedPool.from_bytes, self.taxonomy.categories, stored)
        await self._adopt(loaded, snapshot, wanted)
        self.counters["refits_adopted"] += 1
        return True

    async def _fit_shared(
        self,
        claim: RefitClaim,
        snapshot: PoolSnapshot,
        calibration: Calibration | None,
        store_calibration: bool,
        deadline: float | None,
    ) -> bool:
        """The fit of these rows: the one another process stored, else made here while this
        process holds the fit's lock (on a thread at start, in the child process once routing);
        False when `deadline` (the loop's time) passed first."""
        fingerprints: dict[Calibration, str] = {}
        loop = asyncio.get_running_loop()
        while True:
            if await self._load_shared(snapshot, calibration, fingerprints, store_calibration):
                return True
            if await claim.claim():
                made = False
                try:  # stored between the look and the lock?
                    if await self._load_shared(
                        snapshot, calibration, fingerprints, store_calibration
                    ):
                        return True
                    await self._fit_here(snapshot, calibration, store_calibration, deadline)
                    made = True
                finally:
                    await claim.release(made)
                return True
            left = POLL_S if deadline is None else min(POLL_S, deadline - loop.time())
            if left <= 0:
                return False
            await claim.fit_stored(left)

    async def _fit_shared_later(
        self,
        claim: RefitClaim,
        snapshot: PoolSnapshot,
        calibration: Calibration | None,
        store_calibration: bool,
    ) -> None:
        try:
            await self._fit_shared(claim, snapshot, calibration, store_calibration, None)
        except (DatabaseError, OSError, ValueError, KeyError):
            log.exception("could not load or make the classifier's fit")
            self.counters["db_errors"] += 1
        finally:
            self.refit_task = None

    async def _load_shared(
        self,
        snapshot: PoolSnapshot,
        calibration: Calibration | None,
        fingerprints: dict[Calibration, str],
        store_calibration: bool,
    ) -> bool:
        """Route with the fit stored for these rows, under the calibration another process
        stored or this start's own (then stored, unless it was kept); True when there was one."""
        for candidate in {await self._stored_calibration(), calibration}:
            if candidate is None:
                continue
            if candidate not in fingerprints:
                fingerprints[candidate] = await asyncio.to_thread(
                    self.local.fingerprint, candidate, snapshot
                )
            if await self._load_stored(snapshot, fingerprints[candidate]):
                self.fits_loaded += 1
                if store_calibration:
                    await self._store_calibration()
                return True
        return False

    async def _fit_here(
        self,
        snapshot: PoolSnapshot,
        calibration: Calibration | None,
        store_calibration: bool,
        deadline: float | None,
    ) -> None:
        """Fit, route with it and store it (its calibration first: the others look for the fit
        under the stored calibration). While starting (`deadline` set) on a thread; once
        routing, in the child process at idle priority."""
        if deadline is not None:
            fitted = await asyncio.to_thread(self._fit, snapshot, calibration)
            stored = await asyncio.to_thread(fitted.to_bytes)
        else:
            fitted, stored = await self._fit_in_child(snapshot, calibration)
        self.fits_computed += 1
        await self._adopt(fitted, snapshot)
        if store_calibration:
            await self._store_calibration()
        await self._store_fitted(fitted, stored, snapshot)

    async def _fit_in_child(
        self, snapshot: PoolSnapshot, calibration: Calibration | None
    ) -> tuple[FittedPool, bytes]:
        """The fit made in a child process at idle priority; where the child cannot run, on a
        thread (then routing slows while it works: counted and logged)."""
        try:
            return await fit_in_process(
                snapshot.vectors,
                snapshot.texts,
                snapshot.categories,
                self.taxonomy.categories,
                calibration,
            )
        except FitProcessError:
            log.exception("refitting on a thread instead")
            self.counters["refit_process_errors"] += 1
            fitted = await asyncio.to_thread(self._fit, snapshot, calibration)
            return fitted, await asyncio.to_thread(fitted.to_bytes)

    async def _refit(self) -> None:
        """Refit and recalibrate (cross-validated) on the grown pool, and rebuild a large pool's
        index, in a child process at idle priority; where the child cannot run, on a thread
        (then routing slows while it works: counted and logged)."""
        try:
            snapshot = await asyncio.to_thread(self.local.pool.snapshot)
            fitted, stored = await self._fit_in_child(snapshot, None)
            self.fits_computed += 1
            await self._adopt(fitted, snapshot)
            await self._store_calibration()
            await self._store_fitted(fitted, stored, snapshot)
        finally:
            self.refit_task = None

    async def load_or_fit(self, calibration: Calibration | None) -> None:
        """The classifier (and index) stored for this very pool and calibration, else a fresh
        fit (stored)."""
        snapshot = self.local.pool.snapshot()
        if calibration is not None:
            wanted = await asyncio.to_thread(self.local.fingerprint, calibration, snapshot)
            if await self._load_stored(snapshot, wanted):
                self.fits_loaded += 1
                return
        fitted = await asyncio.to_thread(self._fit, snapshot, calibration)
        self.fits_computed += 1
        await self._adopt(fitted, snapshot)
        await self._store_fitted(fitted, await asyncio.to_thread(fitted.to_bytes), snapshot)

    async def _load_stored(self, snapshot: PoolSnapshot, wanted: str) -> bool:
        """Route with the fit stored under `wanted` (the fingerprint of these rows); True when
        there was one that could be read."""
        loaded: FittedPool | None = None
        try:
            stored = await fitted_state.load(self.conn, wanted)
            if stored is not None:  # off the event loop: a start may be routing already
                categories = self.taxonomy.categories
                loaded = await asyncio.to_thread(FittedPool.from_bytes, categories, stored)
        except (DatabaseError, OSError, ValueError, KeyError):
            log.exception("could not read the stored classifier; fitting it again")
        if loaded is None:
            return False
        if loaded.index is not None and loaded.index.built_size != len(snapshot.texts):
            loaded = FittedPool(loaded.classifier, None)
        await self._adopt(loaded, snapshot, wanted)
        return True

    def _fit(self, snapshot: PoolSnapshot, calibration: Calibration | None) -> FittedPool:
        return fit_pool(
            snapshot.vectors,
            snapshot.texts,
            snapshot.categories,
            self.taxonomy.categories,
            calibration,
        )

    async def _adopt(
        self, fitted: FittedPool, snapshot: PoolSnapshot, key: str | None = None
    ) -> None:
        """Route with the fitted classifier, and search with its index (built here when none
        came with it and the pool is large); `key`, its fingerprint, when it was stored."""
        self.local.classifier = fitted.classifier
        self.fingerprint = key
        pool = self.local.pool
        index = fitted.index
        if index is not None and not await asyncio.to_thread(index.matches, snapshot.vectors):
            index = None  # stored by a process whose pool holds the same rows in another order
        if index is not None:
            await asyncio.to_thread(pool.adopt_index, index, snapshot.generation)
        elif len(snapshot.texts) > EXACT_LIMIT:
            await asyncio.to_thread(pool.build_index)

    async def _store_fitted(
        self, fitted: FittedPool, stored: bytes, snapshot: PoolSnapshot
    ) -> None:
        """Store the fitted state under the fingerprint of the rows it was fit on (the pool may
        have grown meanwhile: then the next start fits again, rather than load a stale fit)."""
        classifier = fitted.classifier
        if not classifier.ready:  # too little to fit yet: nothing worth keeping
            return
        try:
            key = await asyncio.to_thread(self.local.fingerprint, classifier.calibration, snapshot)
            await fitted_state.save(self.conn, key, stored)
            if self.local.classifier is classifier:
                self.fingerprint = key
        except DatabaseError:
            log.exception("could not store the fitted classifier")
            self.counters["db_errors"] += 1

    async def _stored_calibration(self) -> Calibration | None:
        """The last cross-validated calibration, when it was made for this embedder's pool of
        about this size, by this release's classifier."""
        raw = await settings.get_setting(self.conn, CALIBRATION_KEY)
        try:
            stored = json.loads(raw) if raw else None
            if stored is None or stored["embedder_id"] != self.local.embedder.id:
                return None
            # Made for another classifier (an earlier release's head): its scales mean nothing
            # to this one's logits.
            if stored.get("state_version") != fitted_state.STATE_VERSION:
                return None
            if len(self.local.pool) > stored["pool_size"] * SERVES_GROWTH:
                return None
            return Calibration(
                float(stored["head_scale"]),
                float(stored["ngram_scale"]),
                float(stored.get("far_slope", 0.0)),
                float(stored.get("far_pivot", 1.0)),
            )
        except (ValueError, KeyError, TypeError):
            return None

    async def _store_calibration(self) -> None:
        classifier = self.local.classifier
        value = {
            "embedder_id": self.local.embedder.id,
            "state_version": fitted_state.STATE_VERSION,
            "pool_size": classifier.trained_on,
            "head_scale": classifier.calibration.head_scale,
            "ngram_scale": classifier.calibration.ngram_scale,
            "far_slope": classifier.calibration.far_slope,
            "far_pivot": classifier.calibration.far_pivot,
        }
        try:
            await settings.set_setting(self.conn, CALIBRATION_KEY, json.dumps(value))
        except DatabaseError:
            log.exception("could not store the calibration")
            self.counters["db_errors"] += 1
