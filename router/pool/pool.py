"""The k-NN pool: labelled message vectors held in memory for search and persisted in SQLite."""

from __future__ import annotations

import asyncio
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
    " category, confidence, local_category, local_confidence, reason)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
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


async def rows_after(conn: Database, embedder_id: str, after_id: int, limit: int) -> list[Row]:
    """This embedder's rows added after row `after_id` (another process's labels), in id order:
    (id, prompt_hash, text, embedding, category, origin, added_at) each."""
    return await conn.fetch_all(
        "SELECT id, prompt_hash, text, embedding, category, origin, added_at FROM pool"
        " WHERE id > ? AND embedder_id = ? ORDER BY id LIMIT ?",
        (after_id, embedder_id, limit),
    )


class Pool:
    """Vectors of one embedder, appended in place (capacity doubles) so a search never copies."""

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
        self._lock = threading.Lock()
        self.last_id = 0  # the last row read from the table (others' rows come after it)
        # Called with True once rows added behind are committed (router/cluster/ tells the
        # other processes), with False when they were dropped.
        self.on_written: Callable[[bool], None] | None = None

    def __len__(self) -> int:
        return self._size

    @property
    def vectors(self) -> np.ndarray:
        return self._vectors[: self._size]

    def contains_text(self, text: str) -> bool:
        return text_hash(text) in self._hashes

    async def load(self, rows: Sequence[Row] | None = None) -> int:
        """Hold this embedder's rows in memory: `rows` from read_rows (read before the embedder
        was ready), else read now. Return how many."""
        if rows is None:
            rows = await read_rows(self._conn, self.embedder_id)
        mine = [row for row in rows if row[0] == self.embedder_id]
        columns = list(zip(*mine, strict=True)) if mine else [()] * 5
        _, hashes, texts, blobs, categories = columns[:5]
        ids = columns[5] if len(columns) > 5 else ()  # rows made in code have no id
        # One buffer of every vector, writable (a bytearray), so the matrix needs no copy.
        vectors = np.frombuffer(bytearray().join(blobs), dtype=np.float32)
        with self._lock:
            self._vectors = vectors.reshape(len(mine), self.dim)
            self._size = len(mine)
            self.texts = list(texts)
            self.categories = list(categories)
            self._hashes = set(hashes)
            self.last_id = max((int(i) for i in ids), default=0)
        await self._refresh_index()
        return len(mine)

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
        self._append(fresh)
        await self._refresh_index()
        return new

    def build_index(self) -> None:
        """Index a large pool for search; a small one is searched exactly."""
        with self._lock:
            matrix, size = self._vectors, self._size
        index = CoarseIndex(matrix[:size]) if size > EXACT_LIMIT else None
        with self._lock:
            self._index = index

    async def _refresh_index(self) -> None:
        index = self._index
        if (index is None and self._size > EXACT_LIMIT) or (index and index.stale(self._size)):
            await asyncio.to_thread(self.build_index)

    def _append(self, fresh: list[tuple[str, PoolEntry]]) -> None:
        with self._lock:
            needed = self._size + len(fresh)
            if needed > len(self._vectors):
                grown = np.zeros((max(needed, 2 * len(self._vectors), 64), self.dim), np.float32)
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

    async def add_many(self, entries: list[PoolEntry], at: float | None = None) -> int:
        """Store entries whose normalized text is new; return how many were added."""
        now = time.time() if at is None else at
        fresh = self._fresh(entries)
        if not fresh:
            return 0
        async with self._conn.transaction():
            await self._conn.execute_many(
                INSERT_SQL, [self._row(digest, entry, now) for digest, entry in fresh.items()]
            )
        self._append(list(fresh.items()))
        await self._refresh_index()
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
            self._vectors = self._vectors[keep].copy()
            self._size = len(keep)
            self.texts = [self.texts[i] for i in keep]
            self.categories = [self.categories[i] for i in keep]
            self._hashes -= hashes
            self._index = None
        await self._refresh_index()
        return dropped

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
        await self._refresh_index()
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
