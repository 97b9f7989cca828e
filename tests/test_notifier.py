"""The NOTIFY sender on its own: a failure it has no name for costs that batch, not the
notifications of every process's later turns."""

from __future__ import annotations

from collections import Counter
from typing import Any

from router.store.notifier import Notifier


class SurprisedOnce:
    """A database whose first statement raises what no seam maps (a driver's surprise), then
    takes the rest: what it was sent is kept to be read."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, list[str]]] = []
        self.failed = False

    async def execute(self, sql: str, params: tuple[Any, ...]) -> None:
        if not self.failed:
            self.failed = True
            raise RuntimeError("a driver's surprise")
        channel, payloads = params
        self.sent.append((channel, list(payloads)))


async def test_an_unmapped_error_drops_its_batch_and_the_next_still_goes_out(caplog):
    db = SurprisedOnce()
    counters: Counter[str] = Counter()
    notifier = Notifier(db, counters)  # type: ignore[arg-type]
    notifier.start()
    try:
        notifier.put("crabbot_turns", "lost")
        assert await notifier.flush(10.0), "the notifier stopped"
        notifier.put("crabbot_turns", "after")
        assert await notifier.flush(10.0), "the notifier stopped"
    finally:
        await notifier.close()
    assert db.sent == [("crabbot_turns", ["after"])]
    assert counters["notify_dropped_error"] == 1
    assert "a driver's surprise" in caplog.text
