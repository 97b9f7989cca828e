"""A streamed reply on a chat platform: the answer so far is shown while it is written, throttled,
then the finished answer is split at the platform's limit and each piece settled in a message."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from typing import Protocol

from bot.split import split_message

log = logging.getLogger(__name__)


class Surface(Protocol):
    """Where one reply appears. Piece `index` is the index-th message of the reply."""

    limit: int

    def size(self, text: str) -> int:
        """How the platform counts `text` against `limit`."""

    async def show(self, index: int, text: str) -> None:
        """Show an unfinished piece (a draft, or a message edited in place)."""

    async def settle(self, index: int, text: str) -> None:
        """Put a finished piece in its message for good; raises only when it cannot be sent."""


class StreamedReply:
    """Feeds a Surface: `update` with the answer so far (at most one show per `interval_s`,
    the newest text wins), then `finish` with the whole answer."""

    def __init__(self, surface: Surface, interval_s: float, counters: Counter[str]) -> None:
        self.surface = surface
        self.interval_s = interval_s
        self.counters = counters
        self._latest = ""
        self._dirty = asyncio.Event()
        self._closed = asyncio.Event()
        self._runner: asyncio.Task[None] | None = None
        self._shown: dict[int, str] = {}
        self._settled: dict[int, str] = {}

    @property
    def started(self) -> bool:
        return self._runner is not None

    def update(self, text: str) -> None:
        """The answer so far; returns at once (called for every chunk of the stream)."""
        self._latest = text
        self._dirty.set()
        if self._runner is None:
            self._runner = asyncio.create_task(self._run())

    async def finish(self, text: str | None) -> None:
        """Show the whole answer: every piece settled, later pieces as further messages."""
        self._closed.set()
        self._dirty.set()  # wakes a runner waiting for text
        if self._runner is not None:
            await self._runner  # an edit on its way completes first, so pieces stay in order
        if text and text.strip():
            await self._render(text, final=True)

    async def _run(self) -> None:
        while not self._closed.is_set():
            await self._dirty.wait()
            if self._closed.is_set():
                return
            self._dirty.clear()
            try:
                await self._render(self._latest, final=False)
            except Exception as exc:  # a lost preview costs nothing: finish() settles it all
                log.warning("streamed preview failed: %s", exc)
                self.counters["stream_preview_errors"] += 1
            # The throttle: platforms limit edits; a finished answer cuts the wait short.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closed.wait(), self.interval_s)

    async def _render(self, text: str, final: bool) -> None:
        pieces = split_message(text, self.surface.limit, self.surface.size)
        for index, piece in enumerate(pieces):
            # Every piece but the last is finished: the text has grown past it.
            if final or index < len(pieces) - 1:
                if self._settled.get(index) != piece:
                    await self.surface.settle(index, piece)
                    self._settled[index] = piece
            elif self._shown.get(index) != piece:
                await self.surface.show(index, piece)
                self._shown[index] = piece
