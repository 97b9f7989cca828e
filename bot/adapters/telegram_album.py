"""Telegram albums: an album's photos arrive as separate messages sharing a media_group_id, with
no sign of the last one, so they are gathered until none has come for a short wait."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from telegram import Message

log = logging.getLogger(__name__)

MAX_ALBUM_PARTS = 10  # Telegram's own limit: more cannot be one album
AlbumKey = tuple[int, str]  # (chat id, media_group_id)
OnAlbum = Callable[[list[Message]], Awaitable[None]]


@dataclass
class _Gathering:
    parts: list[Message] = field(default_factory=list)
    timer: asyncio.Task[None] | None = None


class Albums:
    """Gathers the parts of each album (one chat, one media_group_id) and hands them to
    `on_album`, in the order they were sent, `wait_s` after the last part came."""

    def __init__(self, wait_s: float, on_album: OnAlbum, counters: Counter[str]) -> None:
        self.wait_s = wait_s
        self.on_album = on_album
        self.counters = counters
        self._gathering: dict[AlbumKey, _Gathering] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def add(self, message: Message) -> None:
        """Take one part of an album and (re)start its wait; returns at once. Nothing here
        awaits, so parts handled at the same time, in any order, gather all the same."""
        assert message.media_group_id is not None
        key = (message.chat_id, message.media_group_id)
        album = self._gathering.setdefault(key, _Gathering())
        if len(album.parts) >= MAX_ALBUM_PARTS:
            log.warning("an album in chat %s has over %d parts; left out", key[0], MAX_ALBUM_PARTS)
            self.counters["album_parts_dropped"] += 1
            return
        album.parts.append(message)
        # An album still here has not been handed on: its timer is still waiting, so
        # cancelling it cannot cut an answer short.
        if album.timer is not None:
            album.timer.cancel()
        album.timer = self._start(self._after_wait(key))

    async def close(self) -> None:
        """Hand on the albums still gathering now, then wait until every album is answered."""
        for album in self._gathering.values():
            if album.timer is not None:
                album.timer.cancel()
            self._start(self._hand_on(album.parts))
        self._gathering.clear()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def _start(self, work: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.create_task(work)
        self._tasks.add(task)  # held until done: the loop keeps only a weak reference
        task.add_done_callback(self._tasks.discard)
        return task

    async def _after_wait(self, key: AlbumKey) -> None:
        await asyncio.sleep(self.wait_s)
        # Taken off before any await: a part that comes after this starts an album of its own.
        await self._hand_on(self._gathering.pop(key).parts)

    async def _hand_on(self, parts: list[Message]) -> None:
        try:
            await self.on_album(sorted(parts, key=lambda part: part.message_id))
        except Exception:  # as a handler's failure: logged, and the next album goes on
            log.exception("telegram album failed")
