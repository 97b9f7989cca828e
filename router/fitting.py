"""Fitting the local classifier on the pool, off the event loop, and keeping what was fitted (the
classifier and its cross-validated calibration) in the store, so a restart on an unchanged pool
loads it instead of fitting again."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Protocol

from router.counters import Counters
from router.signals.calibration import Calibration
from router.signals.local_signal import LocalSignal
from router.store import fitted_state, settings
from router.store.database import Database, DatabaseError
from router.taxonomy import Taxonomy

log = logging.getLogger(__name__)

CALIBRATION_KEY = "local_calibration"
REFIT_GROWTH = 1.05  # refit the head once the pool has grown by 5%


class RefitClaim(Protocol):
    """With other processes on the database (router/cluster/): one of them refits at a time,
    stores the fit, and the others load it (`adopt`) when their pool matches it."""

    async def claim(self) -> bool: ...
    async def release(self, refitted: bool) -> None: ...


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

    async def start(self, seeded: Calibration | None) -> None:
        """The stored classifier and calibration when they fit this pool, else a fresh fit."""
        kept = await self._stored_calibration()
        await self.load_or_fit(kept or seeded)
        if kept is None:
            await self._store_calibration()

    def refit_if_grown(self) -> None:
        """Start a refit in the background once the pool has grown by REFIT_GROWTH."""
        trained_on = self.local.classifier.trained_on
        if len(self.local.pool) >= trained_on * REFIT_GROWTH and self.refit_task is None:
            self.refit_task = asyncio.create_task(self._refit_claimed())

    def refit(self) -> None:
        """Start a refit in the background now (the pool lost entries: an erasure)."""
        if self.refit_task is None:
            self.refit_task = asyncio.create_task(self._refit_claimed())

    async def wait(self) -> None:
        if self.refit_task is not None:
            await self.refit_task

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
        if self.refit_task is not None:
            return False
        calibration = await self._stored_calibration()
        if calibration is None:
            return False
        pool = self.local.pool
        wanted = await asyncio.to_thread(
            fitted_state.fingerprint,
            self.local.embedder.id,
            list(pool.texts),
            list(pool.categories),
            self.taxonomy.categories,
            calibration,
        )
        loaded = await fitted_state.load(self.conn, wanted, self.taxonomy.categories)
        if loaded is None or self.refit_task is not None:
            return False
        self.local.classifier = loaded
        self.counters["refits_adopted"] += 1
        return True

    async def _refit(self) -> None:
        """Refit and recalibrate (cross-validated) on the grown pool, off the event loop."""
        try:
            self.local.classifier = await asyncio.to_thread(self.local.fit)
            await self._store_calibration()
            await self._store_fitted()
        finally:
            self.refit_task = None

    async def load_or_fit(self, calibration: Calibration | None) -> None:
        """The classifier stored for this very pool and calibration, else a fresh fit (stored)."""
        if calibration is not None:
            wanted = self.local.fingerprint(calibration)
            try:
                loaded = await fitted_state.load(self.conn, wanted, self.taxonomy.categories)
            except (DatabaseError, OSError, ValueError, KeyError):
                log.exception("could not read the stored classifier; fitting it again")
                loaded = None
            if loaded is not None:
                self.local.classifier = loaded
                return
        self.local.classifier = await asyncio.to_thread(self.local.fit, calibration)
        await self._store_fitted()

    async def _store_fitted(self) -> None:
        classifier = self.local.classifier
        if not classifier.ready:  # too little to fit yet: nothing worth keeping
            return
        try:
            key = self.local.fingerprint(classifier.calibration)
            await fitted_state.save(self.conn, key, classifier)
        except DatabaseError:
            log.exception("could not store the fitted classifier")
            self.counters["db_errors"] += 1

    async def _stored_calibration(self) -> Calibration | None:
        """The last cross-validated calibration, when it was made for this embedder on a pool
        of about this size."""
        raw = await settings.get_setting(self.conn, CALIBRATION_KEY)
        try:
            stored = json.loads(raw) if raw else None
            if stored is None or stored["embedder_id"] != self.local.embedder.id:
                return None
            if len(self.local.pool) > stored["pool_size"] * REFIT_GROWTH:
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
