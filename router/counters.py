"""The router's counters (errors, fallbacks, dropped rows, by name): a Counter that tells its
watchers of each increase as it happens, so a proxy worker can publish them to its siblings."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

Watcher = Callable[[str, int], None]


class Counters(Counter[str]):
    """`counters[name] += n` as on any Counter; each watcher is called with (name, n)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.watchers: list[Watcher] = []  # before the first item: Counter's init sets items
        super().__init__(*args, **kwargs)

    def __setitem__(self, key: str, value: int) -> None:
        increase = value - self[key]
        super().__setitem__(key, value)
        if increase > 0:
            for watcher in self.watchers:
                watcher(key, increase)
