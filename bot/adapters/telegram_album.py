"""Telegram albums: an album's photos arrive as separate messages sharing a media_group_id, with
no sign of the last one, so they are gathered until none has come for a short wait."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from dataclasses import dataclass, field

from telegram import Message

log = logging.getLogger(__name__)

MAX_ALBUM_PARTS = 10  # Telegram's own limit: more cannot be one album
AlbumKey = tuple[int, str]  # (chat id, media_group_id)
Gathered = asyncio.Future[list[Message]]  # an album's parts, in the order they were sent


@dataclass
class _Gathering:
    gathered: Gathered
    parts: list[Message] = field(default_factory=list)
    timer: asyncio.TimerHandle | None = None


class Albums:
    """Gathers the parts of each album (one chat, one media_group_id): the first part gets a
    future that is resolved with every part `wait_s` after the last one came."""

    def __init__(self, wait_s: float, counters: Counter[str]) -> None:
        self.wait_s = wait_s
        self.counters = counters
        self._gathering: dict[AlbumKey, _Gathering] = {}

    def add(self, message: Message) -> Gathered | None:
        """Take one part of an album and (re)start its wait; for the album's first part, the
        future of all its parts (None for the others). Nothing here awaits, so parts handled at
        the same time, in any order, gather all the same."""
        assert message.media_group_id is not None
        key = (message.chat_id, message.media_group_id)
        album = self._gathering.get(key)
        first = album is None
        if album is None:
            album = self._gathering[key] = _Gathering(asyncio.get_running_loop().create_future())
        if len(album.parts) >= MAX_ALBUM_PARTS:
            log.warning("an album in chat %s has over %d parts; left out", key[0], MAX_ALBUM_PARTS)
            self.counters["album_parts_dropped"] += 1
            return None
        album.parts.append(message)
        if album.timer is not None:
            album.timer.cancel()
        album.timer = asyncio.get_running_loop().call_later(self.wait_s, self._gathered, key)
        return album.gathered if first else None

    def close(self) -> None:
        """Every album still gathering is complete now (the bot stops: no part will come)."""
        for key in list(self._gathering):
            self._gathered(key)

    def _gathered(self, key: AlbumKey) -> None:
        # Taken off first: a part that comes after this starts an album of its own.
        album = self._gathering.pop(key)
        if album.timer is not None:
            album.timer.cancel()
        if not album.gathered.done():
            album.gathered.set_result(sorted(album.parts, key=lambda part: part.message_id))
