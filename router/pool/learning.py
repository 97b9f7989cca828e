"""Learning that cannot be steered: which categorizer labels may enter the pool. Each label has
an origin (a conversation, a chat, a proxy client key); no origin may write more than its share
in a window, labels that arrive from one origin in a burst wait in quarantine, and so do labels
that the local signal contradicts with confidence (it gives the label's tier little chance) when
their origin has no history yet."""

from __future__ import annotations

from collections import defaultdict, deque
from dataclasses import dataclass

from router.config import PoolSettings
from router.store.database import Database

LEARN, QUARANTINE = "learn", "quarantine"


@dataclass(frozen=True)
class Verdict:
    action: str  # LEARN or QUARANTINE
    reason: str = ""


@dataclass(frozen=True)
class LocalView:
    """What the local signal read in the message alone."""

    category: str
    tier: str
    confidence: float
    # The chance it gives the label's own tier; None when unknown (then only its own tier's
    # confidence speaks).
    label_tier_probability: float | None = None

    def against(self, tier: str) -> float:
        """How sure the local signal is that the message is not of `tier`."""
        if tier == self.tier:
            return 0.0
        if self.label_tier_probability is None:
            return self.confidence
        return 1.0 - self.label_tier_probability


class LearningGate:
    """Judges each label by its origin's record: labels learned in all, learned in the window,
    and labels that arrived lately. One per router; the record of past runs is read once."""

    def __init__(self, settings: PoolSettings) -> None:
        self.settings = settings
        self._learned: dict[str, int] = defaultdict(int)  # all time, by origin
        self._window: dict[str, deque[float]] = defaultdict(deque)  # learned at, in the window
        self._arrived: dict[str, deque[float]] = defaultdict(deque)  # labels seen, burst window
        self._loaded = False

    async def load(self, conn: Database, now: float) -> None:
        """Read what each origin taught in earlier runs (once)."""
        if self._loaded:
            return
        since = now - self.settings.source_window_h * 3600
        rows = await conn.fetch_all(
            "SELECT origin, added_at FROM pool WHERE origin IS NOT NULL ORDER BY added_at"
        )
        for origin, added_at in rows:
            self._learned[origin] += 1
            if added_at >= since:
                self._window[origin].append(float(added_at))
        self._loaded = True

    def judge(self, origin: str, at: float, llm_tier: str, local: LocalView | None) -> Verdict:
        """Whether a label from `origin` at `at` may be learned now; the arrival is counted."""
        settings = self.settings
        arrived = self._arrived[origin]
        _trim(arrived, at - settings.burst_s)
        arrived.append(at)
        if len(arrived) > settings.burst_max:
            return Verdict(QUARANTINE, f"burst: {len(arrived)} labels in {settings.burst_s:g} s")
        window = self._window[origin]
        _trim(window, at - settings.source_window_h * 3600)
        if len(window) >= settings.max_per_source:
            return Verdict(
                QUARANTINE,
                f"quota: {len(window)} learned in {settings.source_window_h:g} h",
            )
        # Against the label's tier, not for one other tier: a request read as 0.59 analysis and
        # 0.41 coding contradicts "casual" as surely as one read as 0.9 coding.
        contradicts = (
            local is not None and local.against(llm_tier) >= settings.contradiction_confidence
        )
        if contradicts and self._learned[origin] < settings.trusted_after:
            assert local is not None
            return Verdict(
                QUARANTINE,
                f"contradicts the local signal ({local.category} {local.confidence:.2f},"
                f" {llm_tier} {1.0 - local.against(llm_tier):.2f})"
                f" from an origin with {self._learned[origin]} labels learned",
            )
        return Verdict(LEARN)

    def learned(self, origin: str, at: float) -> None:
        """A label from `origin` entered the pool."""
        self._learned[origin] += 1
        self._window[origin].append(at)

    def heard(self, origin: str, at: float) -> None:
        """Another process learned a label from `origin`: its record here counts it too (the
        bounds hold across processes; the label itself was judged there, once)."""
        if self._loaded:
            self.learned(origin, at)

    def forget(self, origin: str) -> None:
        """The origin's entries were purged: its record starts over."""
        for record in (self._learned, self._window, self._arrived):
            record.pop(origin, None)


def _trim(times: deque[float], since: float) -> None:
    while times and times[0] < since:
        times.popleft()
