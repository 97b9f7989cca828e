"""Single messages waiting for the embedding thread, embedded together: when the thread gets free
it takes every message queued meanwhile (up to a cap) in one call, and never waits for more."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from concurrent.futures import Future, InvalidStateError

import numpy as np

# A batch of k short messages costs about k single calls less 10% of the CPU on one core, and
# far fewer OpenMP fork-joins (what a busy machine makes expensive); a message that arrives
# while a batch runs waits for it, so the batch stays small.
MAX_BATCH = 16


class MessageBatcher:
    """Queues messages by key (their normalized text: one embedding for every caller that waits
    for the same message) and drains the queue on the embedding thread, one batch per turn."""

    def __init__(
        self,
        submit: Callable[[Callable[[], None]], object],
        encode: Callable[[list[str]], np.ndarray],
        done: Callable[[str, np.ndarray], None],
        max_batch: int = MAX_BATCH,
    ) -> None:
        self._submit = submit  # runs a function on the embedding thread, after what is queued
        self._encode = encode  # on the embedding thread: one row a text
        self._done = done  # on the embedding thread, before the callers hear of the vector
        self._max_batch = max_batch
        self._lock = threading.Lock()
        self._futures: dict[str, Future[np.ndarray]] = {}  # every message not answered yet
        self._queue: dict[str, str] = {}  # key -> text, in arrival order: not taken yet
        self._draining = False

    def embed(self, key: str, text: str) -> Future[np.ndarray]:
        """The message's vector, computed in the next batch (or the one already coming)."""
        with self._lock:
            future = self._futures.get(key)
            if future is not None:
                return future
            future = Future()
            self._futures[key] = future
            self._queue[key] = text
            if not self._draining:
                self._schedule()
        return future

    def _schedule(self) -> None:
        """Puts one drain on the thread's queue (behind any batch work already there); called
        under the lock. When the thread is gone (the embedder closed), every queued caller
        hears of it."""
        self._draining = True
        try:
            self._submit(self._drain)
        except BaseException as exc:
            self._draining = False
            for key in self._queue:
                self._futures.pop(key).set_exception(exc)
            self._queue.clear()
            raise

    def _drain(self) -> None:
        with self._lock:
            keys = list(self._queue)[: self._max_batch]
            texts = [self._queue.pop(key) for key in keys]
        try:
            vectors = self._encode(texts)
            rows: list[np.ndarray] = []
            for key, vector in zip(keys, vectors, strict=True):
                row = vector.copy()  # not a view: a cached row must not keep its batch alive
                row.flags.writeable = False  # shared by every caller, and the cache
                self._done(key, row)
                rows.append(row)
            failure: BaseException | None = None
        except BaseException as exc:  # every caller of the batch hears of it
            failure, rows = exc, []
        with self._lock:
            futures = [self._futures.pop(key) for key in keys]
        for index, future in enumerate(futures):
            try:
                if failure is not None:
                    future.set_exception(failure)
                else:
                    future.set_result(rows[index])
            except InvalidStateError:  # cancelled by its caller meanwhile
                pass
        with self._lock:
            self._draining = False
            if self._queue:
                with contextlib.suppress(RuntimeError):  # closed: the callers were told
                    self._schedule()
