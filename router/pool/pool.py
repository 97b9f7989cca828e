"""The k-NN pool: labelled message vectors held in memory for search and persisted in SQLite."""

from __future__ import annotations

import contextlib
import ctypes
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from router.pool.vector_index import EXACT_LIMIT, CoarseIndex
from router.store.database import Database, Row
from router.store.write_behind import Job
from router.text import text_hash

INSERT_SQL = (
    "INSERT OR IGNORE INTO pool (prompt_hash, text, embedding, embedder_id, category,"
    " label_source, confidence, added_at, origin, conv_key, user_key)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
QUARANTINE_SQL = (
    "INSERT OR IGNORE INTO pool_quarantine (at, origin, prompt_hash, text, embedding, embedder_id,"
    " category, confidence, local_category, local_confidence, reason, conv_key, user_key)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)

PROBES = 16  # coarse lists searched per query in a large pool


@dataclass(frozen=True)
class Neighbour:
    text: str
    category: str
    similarity: float


@dataclass(frozen=True)
class PoolEntry:
    text: str
    category: str
    vector: np.ndarray
    label_source: str
    confidence: float | None = None
    conv_key: str | None = None  # where a chat message taught it, so it can be erased
    user_key: str | None = None
    origin: str | None = None  # who taught it (a chat, a client key); None: seed or import


@dataclass(frozen=True)
class PoolSnapshot:
    """The pool's rows at one moment, in order: what a fit reads and its fingerprint names."""

    vectors: np.ndarray
    texts: list[str]
    categories: list[str]
    generation: int  # the pool's numbering of rows the snapshot was taken in


async def read_rows(conn: Database, embedder_id: str | None = None) -> list[Row]:
    """Pool rows in id order, (embedder_id, prompt_hash, text, embedding, category, id) each:
    one embedder's, or every embedder's (a start reads them while the model loads)."""
    # `+embedder_id`: read the table in id order rather than through the (embedder_id,
    # prompt_hash) index, which made SQLite sort every row, vectors and all (4x slower).
    column = conn.sql_function("unindexed", "embedder_id")
    where, parameters = (f" WHERE {column} = ?", (embedder_id,)) if embedder_id else ("", ())
    return list(
        await conn.fetch_all(
            "SELECT embedder_id, prompt_hash, text, embedding, category, id FROM pool"
            + where
            + " ORDER BY id",
            parameters,
        )
    )


def give_back_free_memory() -> None:
    """Return the heap's free pages to the system (glibc keeps what a start freed, such as the
    pool rows' vector bytes, mapped); nothing where malloc_trim is missing."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).malloc_trim(0)


async def rows_after(conn: Database, embedder_id: str, after_id: int, limit: int) -> list[Row]:
    """This embedder's rows added after row `after_id` (another process's labels), in id order:
    (id, prompt_hash, text, embedding, category, origin, added_at) each."""
    return await conn.fetch_all(
        "SELECT id, prompt_hash, text, embedding, category, origin, added_at FROM pool"
        " WHERE id > ? AND embedder_id = ? ORDER BY id LIMIT ?",
        (after_id, embedder_id, limit),
    )


async def stored_hashes(conn: Database, embedder_id: str) -> set[str]:
    """The text hashes of the pool entries the database holds for `embedder_id`."""
    sql = "SELECT prompt_hash FROM pool WHERE embedder_id = ?"
    rows = await conn.fetch_all(sql, (embedder_id,))
    return {str(row[0]) for row in rows}


class Pool:
    """Vectors of one embedder, appended in place (capacity grows by a quarter) so a search never
    copies. Once a large pool is indexed, its indexed rows are held in the index's list order
    (the pool's own order is `index.order`), so the index needs no second copy of them."""

    def __init__(self, conn: Database, embedder_id: str, dim: int) -> None:
        self._conn = conn
        self.embedder_id = embedder_id
        self.dim = dim
        self._vectors = np.zeros((0, dim), dtype=np.float32)
        self._size = 0
        self.texts: list[str] = []
        self.categories: list[str] = []
        self._hashes: set[str] = set()
        self._index: CoarseIndex | None = None
        self._generation = 0  # a drop or a load renumbers rows: an index made before is void
        self._lock = threading.Lock()
        self.last_id = 0  # the last row read from the table (others' rows come after it)
        # Called with True once rows added behind are committed (router/cluster/ tells the
        # other processes), with False when they were dropped.
        self.on_written: Callable[[bool], None] | None = None

    def __len__(self) -> int:
        return self._size

    @property
    def conn(self) -> Database:
        """The database its rows are stored in."""
        return self._conn

    @property
    def vectors(self) -> np.ndarray:
        """Every vector in pool order (a copy once the pool is indexed)."""
        with self._lock:
            return self._in_pool_order(self._size)

    def _in_pool_order(self, size: int) -> np.ndarray:
        index, matrix = self._index, self._vectors
        if index is None:
            return matrix[:size]
        ordered = np.empty((size, self.dim), dtype=np.float32)
        ordered[index.order] = matrix[: index.built_size]
        ordered[index.built_size :] = matrix[index.built_size : size]
        return ordered

    def snapshot(self) -> PoolSnapshot:
        """The rows as they are now, in pool order; later additions and drops leave it alone."""
        with self._lock:
            size = self._size
            return PoolSnapshot(
                self._in_pool_order(size),
                self.texts[:size],
                self.categories[:size],
                self._generation,
            )

    def contains_text(self, text: str) -> bool:
        return text_hash(text) in self._hashes

    async def load(self, rows: Sequence[Row] | None = None) -> int:
        """Hold this embedder's rows in memory: `rows` from read_rows (read before the embedder
        was ready; a list is emptied, so its vector bytes go as soon as they are copied), else
        read now. Return how many. No index yet: the caller adopts the stored one or builds it
        (ClassifierFitting.start)."""
        if rows is None:
            rows = await read_rows(self._conn, self.embedder_id)
        mine = [row for row in rows if row[0] == self.embedder_id]
        if isinstance(rows, list):
            rows.clear()
        count = len(mine)
        columns = list(zip(*mine, strict=True)) if mine else [()] * 5
        del mine
        _, hashes, texts, blobs, categories = columns[:5]
        ids = columns[5] if len(columns) > 5 else ()  # rows made in code have no id
        del columns
        # One buffer of every vector, writable (a bytearray), so the matrix needs no copy.
        vectors = np.frombuffer(bytearray().join(blobs), dtype=np.float32)
        del blobs
        names: dict[str, str] = {}  # one string per category, not one per row
        with self._lock:
            self._vectors = vectors.reshape(count, self.dim)
            self._size = count
            self.texts = list(texts)
            self.categories = [names.setdefault(name, name) for name in categories]
            self._hashes = set(hashes)
            self._index = None
            self._generation += 1
            self.last_id = max((int(i) for i in ids), default=0)
        return count

    async def absorb(self, rows: Sequence[Row]) -> list[Row]:
        """Rows from rows_after (another process's labels, committed): the new ones join the
        searchable pool; return those."""
        if not rows:
            return []
        self.last_id = max(self.last_id, *(int(row[0]) for row in rows))
        new = [row for row in rows if row[1] not in self._hashes]
        fresh = [
            (
                str(row[1]),
                PoolEntry(str(row[2]), str(row[4]), np.frombuffer(row[3], dtype=np.float32), ""),
            )
            for row in new
        ]
        self._append(fresh)  # searched exactly past the index until the next refit indexes them
        return new

    def build_index(self) -> None:
        """Index a large pool for search (run it in a thread); a small one is searched exactly."""
        snapshot = self.snapshot()
        if len(snapshot.vectors) > EXACT_LIMIT:
            self.adopt_index(CoarseIndex.build(snapshot.vectors), snapshot.generation)

    def adopt_index(self, index: CoarseIndex, generation: int) -> bool:
        """Search with `index`, built on the first rows of the pool of `generation` (a snapshot);
        False when the pool has been renumbered since, or already has a newer index. The
        rearranging copy is made outside the lock (run it in a thread at scale)."""
        with self._lock:
            matrix, current, size = self._vectors, self._index, self._size
            fresh = generation == self._generation and index.built_size <= size
            if not fresh or (current is not None and current.built_size > index.built_size):
                return False
            physical = np.arange(index.built_size)
            if current is not None:
                physical[current.order] = np.arange(current.built_size)
        grown = np.empty((max(len(matrix), index.built_size), self.dim), dtype=np.float32)
        np.take(matrix, physical[index.order], axis=0, out=grown[: index.built_size])
        with self._lock:
            if self._index is not current or self._generation != generation:
                return False
            if len(self._vectors) > len(grown):
                grown = np.concatenate([grown, np.empty_like(self._vectors[len(grown) :])])
            size = self._size  # rows added meanwhile sit past the old index, in pool order
            grown[index.built_size : size] = self._vectors[index.built_size : size]
            self._vectors, self._index = grown, index
        return True

    def _append(self, fresh: list[tuple[str, PoolEntry]]) -> None:
        with self._lock:
            needed = self._size + len(fresh)
            if needed > len(self._vectors):
                capacity = max(needed, len(self._vectors) * 5 // 4, 64)
                grown = np.zeros((capacity, self.dim), np.float32)
                grown[: self._size] = self._vectors[: self._size]
                self._vectors = grown
            for offset, (digest, entry) in enumerate(fresh):
                self._vectors[self._size + offset] = entry.vector
                self.texts.append(entry.text)
                self.categories.append(entry.category)
                self._hashes.add(digest)
            self._size = needed

    def _fresh(self, entries: list[PoolEntry]) -> dict[str, PoolEntry]:
        fresh: dict[str, PoolEntry] = {}
        for entry in entries:
            digest = text_hash(entry.text)
            if digest not in self._hashes and digest not in fresh:
                fresh[digest] = entry
        return fresh

    def _row(self, digest: str, entry: PoolEntry, now: float) -> tuple[Any, ...]:
        vector = np.asarray(entry.vector, dtype=np.float32).tobytes()
        return (
            digest,
            entry.text,
            vector,
            self.embedder_id,
            entry.category,
            entry.label_source,
            entry.confidence,
            now,
            entry.origin,
            entry.conv_key,
            entry.user_key,
        )

    async def add_many(
        self,
        entries: list[PoolEntry],
        at: float | None = None,
        also: Sequence[tuple[str, list[tuple[Any, ...]]]] = (),
    ) -> int:
        """Store entries whose normalized text is new, and run the statements `also` (sql, rows)
        first in the same transaction; return how many were added. They join the searchable
        pool once committed."""
        now = time.time() if at is None else at
        fresh = self._fresh(entries)
        if not fresh and not also:
            return 0
        async with self._conn.transaction():
            for sql, rows in also:
                if rows:
                    await self._conn.execute_many(sql, rows)
            if fresh:
                await self._conn.execute_many(
                    INSERT_SQL, [self._row(digest, entry, now) for digest, entry in fresh.items()]
                )
        self._append(list(fresh.items()))
        return len(fresh)

    async def drop(self, hashes: set[str]) -> int:
        """Let go of the entries with these text hashes (erased from the table by the caller);
        return how many this pool held."""
        with self._lock:
            keep = [
                i
                for i, text in enumerate(self.texts[: self._size])
                if text_hash(text) not in hashes
            ]
            dropped = self._size - len(keep)
            if not dropped:
                return 0
            self._vectors = self._in_pool_order(self._size)[keep]
            self._size = len(keep)
            self.texts = [self.texts[i] for i in keep]
            self.categories = [self.categories[i] for i in keep]
            self._hashes -= hashes
            self._index = None  # searched exactly until the refit that follows brings one
            self._generation += 1
        return dropped

    def hashes(self) -> set[str]:
        """The text hashes of the entries held now."""
        with self._lock:
            return set(self._hashes)

    async def add_behind(
        self, entries: list[PoolEntry], put: Callable[[Job], None], at: float | None = None
    ) -> int:
        """Add entries to the searchable pool now and queue their rows on a write-behind (`put`),
        so no answer waits for the database; return how many were new."""
        now = time.time() if at is None else at
        fresh = self._fresh(entries)
        if not fresh:
            return 0
        self._append(list(fresh.items()))
        rows = tuple((INSERT_SQL, self._row(d, e, now)) for d, e in fresh.items())
        put(Job(rows, self.on_written))
        return len(fresh)

    def quarantine_job(
        self, entry: PoolEntry, local: tuple[str, float] | None, reason: str, at: float
    ) -> Job:
        """The row of a label held back for review (see router/pool/learning.py)."""
        vector = np.asarray(entry.vector, dtype=np.float32).tobytes()
        local_category, local_confidence = local if local is not None else (None, None)
        row = (
            at,
            entry.origin or "",
            text_hash(entry.text),
            entry.text,
            vector,
            self.embedder_id,
            entry.category,
            entry.confidence,
            local_category,
            local_confidence,
            reason,
            entry.conv_key,
            entry.user_key,
        )
        return Job(((QUARANTINE_SQL, row),))

    def search(self, vector: np.ndarray, k: int) -> list[Neighbour]:
        """The k most similar entries, most similar first (exact inner product on unit vectors)."""
        with self._lock:
            matrix, size, index = self._vectors, self._size, self._index
            texts, categories = self.texts, self.categories
        if size == 0:
            return []
        if index is None:
            rows = None
            scores = matrix[:size] @ vector
        else:
            rows, scores = index.score(vector, matrix, size, PROBES)
        k = min(k, len(scores))
        top = np.argpartition(-scores, k - 1)[:k] if k < len(scores) else np.arange(len(scores))
        top = top[np.argsort(-scores[top])]
        found = top if rows is None else rows[top]
        return [
            Neighbour(texts[i], categories[i], float(s))
            for i, s in zip(found, scores[top], strict=True)
        ]
