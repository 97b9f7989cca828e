"""Retention: data past its keeping time is removed by crabbot itself, soon after start and then
every hour, in the background; what each job removed is counted for /routing stats."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable

from router.counters import Counters
from router.store.database import DatabaseError

log = logging.getLogger(__name__)

FIRST_RUN_S = 5.0  # after start: the start itself is not slowed down
EVERY_S = 3600.0
Job = Callable[[float], Awaitable[int]]  # job(now) -> how many it removed


class Retention:
    """Named jobs run together now and then; `removed` counts what each removed since start."""

    def __init__(self, counters: Counters, every_s: float = EVERY_S) -> None:
        self.counters = counters
        self.every_s = every_s
        self.jobs: dict[str, Job] = {}
        self.removed: Counter[str] = Counter()
        self._singular: dict[str, str] = {}
        self.last_run: float | None = None
        self._task: asyncio.Task[None] | None = None

    def add(self, name: str, job: Job) -> None:
        """`name` says what a job removes, a plural noun then a verb ("prompts cleared",
        "erasure notices cleared"); one of them is the noun less its "s"."""
        self.jobs[name] = job
        self.removed[name] += 0  # shown as 0 until it removes something
        self._singular[name] = name.replace("s ", " ", 1)

    async def run(self, now: float | None = None) -> dict[str, int]:
        """Run every job once; return what each removed. A failing job costs only its turn."""
        now = time.time() if now is None else now
        done: dict[str, int] = {}
        for name, job in list(self.jobs.items()):
            try:
                done[name] = await job(now)
            except DatabaseError:
                log.exception("retention: %s failed; tried again in an hour", name)
                self.counters["db_errors"] += 1
                continue
            self.removed[name] += done[name]
        self.last_run = now
        return done

    def start(self, first_s: float = FIRST_RUN_S) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._loop(first_s), name="retention")

    async def _loop(self, first_s: float) -> None:
        await asyncio.sleep(first_s)
        while True:
            await self.run()
            await asyncio.sleep(self.every_s)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def line(self) -> str:
        """'retention: 12 prompts cleared · 3 messages removed since start (last run 14:02)'."""
        counts = (
            " · ".join(
                f"{n} {self._singular[name] if n == 1 else name}"
                for name, n in self.removed.items()
            )
            or "no jobs"
        )
        when = (
            time.strftime("last run %H:%M", time.localtime(self.last_run))
            if self.last_run
            else "first run in a moment"
        )
        return f"retention: {counts} since start ({when})"
