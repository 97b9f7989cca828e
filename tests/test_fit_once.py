"""Processes starting at once on one new database fit the classifier once: one fits under the
fit's lock (PostgreSQL's advisory lock, or a lock file beside the SQLite file) and stores it,
the others load it, and all route with the same fit."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import numpy as np

from bot.config import CrabbotConfig
from router import ModelRouter, Secrets
from router import fitting as fitting_module
from router import open_router as build_router
from router.fitting import ClassifierFitting
from router.signals.fitted import FittedPool
from tests.conftest import make_config

ROUTERS = 3
GATE_S = 60.0  # a fit waits at most this long for every start to have begun (it takes ms)


async def new_database(tmp_path: Path) -> CrabbotConfig:
    """A config on a new database: the routers starting at once migrate it once (SQLite's
    migration lock file, PostgreSQL's advisory lock), then share the fit."""
    return make_config(tmp_path / "crabbot.db", "live", categorizer={"enabled": False})


async def test_routers_starting_at_once_on_a_new_database_fit_once(tmp_path, embedder, monkeypatch):
    # "At once": no fit may finish before every router has begun its start's fit (asked for
    # the stored calibration), so each would fit for itself unless they share the fit.
    begun: set[int] = set()
    all_begun = threading.Event()
    stored_calibration = ClassifierFitting._stored_calibration

    async def beginning(self: ClassifierFitting) -> Any:
        begun.add(id(self))
        if len(begun) == ROUTERS:
            all_begun.set()
        return await stored_calibration(self)

    fits: list[int] = []
    fit_pool = fitting_module.fit_pool

    def counted_fit(*args: Any) -> FittedPool:
        assert all_begun.wait(GATE_S), "the routers did not start at once"
        fits.append(len(args[0]))
        return fit_pool(*args)

    monkeypatch.setattr(ClassifierFitting, "_stored_calibration", beginning)
    monkeypatch.setattr(fitting_module, "fit_pool", counted_fit)

    config = await new_database(tmp_path)
    starts = [build_router(config, Secrets(), embedder=embedder) for _ in range(ROUTERS)]
    opened = await asyncio.gather(*starts, return_exceptions=True)
    routers = [r for r in opened if isinstance(r, ModelRouter)]
    try:
        assert len(routers) == ROUTERS, [r for r in opened if not isinstance(r, ModelRouter)]
        for router in routers:  # a start that waited past its bound loads the fit meanwhile
            assert router.fitting is not None
            await router.fitting.wait()
        assert len(fits) == 1
        made = sum(router.fitting.fits_computed for router in routers if router.fitting)
        loaded = sum(router.fitting.fits_loaded for router in routers if router.fitting)
        assert (made, loaded) == (1, ROUTERS - 1)
        keys = {router.fitting.fingerprint for router in routers if router.fitting is not None}
        assert len(keys) == 1 and None not in keys
        states = [router.local.classifier.state() for router in routers if router.local]
        assert all(
            np.array_equal(states[0][name], other[name]) for other in states for name in states[0]
        )
        decisions = [await router.route("幫我把這段英文翻成日文") for router in routers]
        assert len({(d.category, d.tier, d.confidence, d.source) for d in decisions}) == 1
        assert decisions[0].source == "knn"
    finally:
        for router in routers:
            await router.close()


async def test_a_start_that_stops_waiting_routes_without_the_fit_then_loads_it(
    tmp_path, embedder, monkeypatch
):
    # The fit takes longer than a start waits (here, not at all): the start that did not get
    # the lock serves at once, without the classifier, and loads the fit once it is stored.
    monkeypatch.setattr(fitting_module, "START_WAIT_S", 0.0)
    stored = threading.Event()
    fit_pool = fitting_module.fit_pool

    def held_fit(*args: Any) -> FittedPool:
        assert stored.wait(GATE_S), "the test did not let the fit finish"
        return fit_pool(*args)

    monkeypatch.setattr(fitting_module, "fit_pool", held_fit)
    config = await new_database(tmp_path)
    starts = {asyncio.ensure_future(build_router(config, Secrets(), embedder=embedder))}
    starts.add(asyncio.ensure_future(build_router(config, Secrets(), embedder=embedder)))
    done, fitting = await asyncio.wait(starts, return_when=asyncio.FIRST_COMPLETED)
    waiting = done.pop().result()
    try:
        assert waiting.fitting is not None and waiting.fitting.fingerprint is None
        before = await waiting.route("幫我把這段英文翻成日文")
        assert before.source != "knn"  # no classifier yet: the local signal does not decide
        stored.set()
        fitter = await fitting.pop()
        try:
            await waiting.fitting.wait()
            assert fitter.fitting is not None and fitter.fitting.fingerprint is not None
            assert waiting.fitting.fingerprint == fitter.fitting.fingerprint
            assert (waiting.fitting.fits_loaded, waiting.fitting.fits_computed) == (1, 0)
            assert fitter.fitting.fits_computed == 1
            after = await waiting.route("幫我把這段英文翻成日文")
            assert after.source == "knn"
        finally:
            await fitter.close()
    finally:
        stored.set()
        await waiting.close()
