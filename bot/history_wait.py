"""How long a reply waits for its conversation's history: the full budget while the database
answers; once a read fails or runs out of time, a short wait until one succeeds again (a reply's,
or the timed-out read the agent leaves running), so a database gone silent costs one reply the
full budget, not every reply (a circuit breaker)."""

from __future__ import annotations

import time
from collections.abc import Callable

FULL_WAIT_S = 3.0  # a lock held elsewhere, a busy host: worth waiting for
# A read that answers at all answers in milliseconds; this is long enough to see the database
# come back, short enough not to be felt.
SHORT_WAIT_S = 0.3
# A database that is alive but slow (every read over the short wait) would never close the
# breaker by itself: this often, one reply waits the full budget again.
FULL_AGAIN_AFTER_S = 60.0


class HistoryWait:
    """The breaker's state; `failed` and `answered` say whether it just opened or closed."""

    def __init__(
        self,
        full_s: float = FULL_WAIT_S,
        short_s: float = SHORT_WAIT_S,
        full_again_after_s: float = FULL_AGAIN_AFTER_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.full_s, self.short_s, self.full_again_after_s = full_s, short_s, full_again_after_s
        self._clock = clock
        self._failing = False
        self._last_full_wait = 0.0

    @property
    def failing(self) -> bool:
        return self._failing

    def seconds(self) -> float:
        """The wait for the next read."""
        if not self._failing:
            return self.full_s
        now = self._clock()
        if now - self._last_full_wait >= self.full_again_after_s:
            self._last_full_wait = now
            return self.full_s
        return self.short_s

    def failed(self) -> bool:
        """A read failed or ran out of time; True when the database was answering until now."""
        opened = not self._failing
        if opened:
            self._failing = True
            self._last_full_wait = self._clock()  # that read waited the full budget
        return opened

    def answered(self) -> bool:
        """A read succeeded; True when the database had been failing until now."""
        closed = self._failing
        self._failing = False
        return closed
