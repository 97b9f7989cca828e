"""Operator tools over the stored pool: read it whole, import another database's pool, check that
another pool's vectors match this embedder, and find (and remove) near-duplicate clusters."""

from __future__ import annotations

import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from router.embedding.blas import one_blas_thread
from router.embedding.embedder import Embedder
from router.store.database import Database, DatabaseError, Row
from router.store.sqlite import SqliteDatabase
from router.taxonomy import Taxonomy
from router.text import text_hash

# (done, total): drives a progress bar without this module knowing about one.
Progress = Callable[[int, int], None]

EMBED_BATCH = 32
COMPAT_THRESHOLD = 0.999
REQUIRED_COLUMNS = ("text", "embedding", "embedder_id", "category")


class PoolToolError(Exception):
    """A pool operation that cannot run; the message says why and what to do."""


@dataclass(frozen=True)
class StoredPool:
    """One embedder's rows of the pool table, in id order."""

    embedder_id: str
    ids: list[int]
    texts: list[str]
    categories: list[str]
    vectors: np.ndarray

    def __len__(self) -> int:
        return len(self.ids)


async def read_pool(conn: Database, embedder_id: str, dim: int) -> StoredPool:
    rows = list(
        await conn.fetch_all(
            "SELECT id, text, category, embedding FROM pool WHERE embedder_id = ? ORDER BY id",
            (embedder_id,),
        )
    )
    blob = b"".join(row["embedding"] for row in rows)
    if len(blob) != 4 * dim * len(rows):
        raise PoolToolError(f"the pool's {embedder_id} vectors are not all {dim}-dimensional")
    return StoredPool(
        embedder_id=embedder_id,
        ids=[int(row["id"]) for row in rows],
        texts=[row["text"] for row in rows],
        categories=[row["category"] for row in rows],
        vectors=np.frombuffer(blob, dtype=np.float32).reshape(len(rows), dim),
    )


async def embedder_counts(conn: Database) -> dict[str, int]:
    return {
        str(row[0]): int(row[1])
        for row in await conn.fetch_all(
            "SELECT embedder_id, COUNT(*) FROM pool GROUP BY 1 ORDER BY 2 DESC"
        )
    }


async def open_other(path: Path) -> SqliteDatabase:
    """Open another crabbot's SQLite file read-only and check it has a usable pool table."""
    if not path.is_file():
        raise PoolToolError(f"{path}: no such database file")
    try:
        conn = await SqliteDatabase.open_read_only(path)
    except DatabaseError as exc:
        raise PoolToolError(f"{path}: cannot open it ({exc})") from None
    try:
        columns = await conn.table_columns("pool")
    except DatabaseError as exc:
        await conn.close()
        raise PoolToolError(f"{path}: not a SQLite database ({exc})") from None
    missing = [column for column in REQUIRED_COLUMNS if column not in columns]
    if missing:
        await conn.close()
        what = "no pool table" if not columns else f"pool lacks {', '.join(missing)}"
        raise PoolToolError(f"{path}: not a crabbot database ({what})")
    return conn


async def _other_rows(conn: SqliteDatabase) -> list[Row]:
    columns = await conn.table_columns("pool")
    extra = [c if c in columns else f"NULL AS {c}" for c in ("label_source", "confidence")]
    sql = f"SELECT text, embedding, embedder_id, category, {', '.join(extra)} FROM pool"
    return list(await conn.fetch_all(sql + (" ORDER BY id" if "id" in columns else "")))


# -- import --------------------------------------------------------------------------------------


@dataclass
class ImportCandidate:
    text: str
    category: str
    label_source: str
    confidence: float | None
    vector: np.ndarray | None  # None until re-embedded


@dataclass
class ImportPlan:
    source: Path
    embedder_id: str
    read: int = 0
    new: list[ImportCandidate] = field(default_factory=list)
    duplicates: int = 0
    refused: Counter[str] = field(default_factory=Counter)

    @property
    def to_embed(self) -> int:
        return sum(candidate.vector is None for candidate in self.new)

    @property
    def refused_total(self) -> int:
        return sum(self.refused.values())


async def plan_import(
    conn: Database,
    source: Path,
    embedder_id: str,
    dim: int,
    taxonomy: Taxonomy,
    reembed: bool,
) -> ImportPlan:
    """Sort the other pool's rows into new, duplicate (by normalized text) and refused."""
    seen = {
        row[0]
        for row in await conn.fetch_all(
            "SELECT prompt_hash FROM pool WHERE embedder_id = ?", (embedder_id,)
        )
    }
    other = await open_other(source)
    try:
        rows = await _other_rows(other)
    finally:
        await other.close()
    # This embedder's rows first: a text stored under both ids is then copied, not re-embedded.
    rows.sort(key=lambda row: row["embedder_id"] != embedder_id)
    plan = ImportPlan(source=source, embedder_id=embedder_id, read=len(rows))
    for row in rows:
        text, category = row["text"], row["category"]
        if not isinstance(text, str) or not text.strip():
            plan.refused["empty text"] += 1
            continue
        if category not in taxonomy.category_tiers:
            plan.refused[f"category {category!r} not in taxonomy {taxonomy.version}"] += 1
            continue
        same_embedder = row["embedder_id"] == embedder_id
        if not same_embedder and not reembed:
            plan.refused[f"embedder {row['embedder_id']} (--reembed embeds them again)"] += 1
            continue
        vector = None
        if same_embedder:
            blob = row["embedding"]
            if not isinstance(blob, bytes) or len(blob) != 4 * dim:
                plan.refused[f"vector is not {dim} float32 values"] += 1
                continue
            vector = np.frombuffer(blob, dtype=np.float32)
        digest = text_hash(text)
        if digest in seen:
            plan.duplicates += 1
            continue
        seen.add(digest)
        confidence = row["confidence"]
        plan.new.append(
            ImportCandidate(
                text=text,
                category=category,
                label_source=str(row["label_source"] or "import"),
                confidence=float(confidence) if confidence is not None else None,
                vector=vector,
            )
        )
    return plan


def embed_missing(plan: ImportPlan, embedder: Embedder, progress: Progress | None = None) -> None:
    """Embed (with the current model) every new entry that came with another embedder's vector."""
    pending = [candidate for candidate in plan.new if candidate.vector is None]
    for start in range(0, len(pending), EMBED_BATCH):
        chunk = pending[start : start + EMBED_BATCH]
        vectors = embedder.embed([candidate.text for candidate in chunk])
        for candidate, vector in zip(chunk, vectors, strict=True):
            candidate.vector = vector
        if progress is not None:
            progress(min(start + EMBED_BATCH, len(pending)), len(pending))


async def apply_import(conn: Database, plan: ImportPlan) -> int:
    """Insert the plan's new entries in one transaction; return how many were stored."""
    if any(candidate.vector is None for candidate in plan.new):
        raise PoolToolError("some entries still need embedding: run embed_missing first")
    now = time.time()
    rows = [
        (
            text_hash(c.text),
            c.text,
            np.asarray(c.vector, dtype=np.float32).tobytes(),
            plan.embedder_id,
            c.category,
            c.label_source,
            c.confidence,
            now,
        )
        for c in plan.new
    ]
    count = "SELECT COUNT(*) FROM pool WHERE embedder_id = ?"
    async with conn.transaction():
        before = await conn.fetch_one(count, (plan.embedder_id,))
        await conn.execute_many(
            "INSERT OR IGNORE INTO pool (prompt_hash, text, embedding, embedder_id, category,"
            " label_source, confidence, added_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            rows,
        )
        after = await conn.fetch_one(count, (plan.embedder_id,))
    return int(after[0] if after else 0) - int(before[0] if before else 0)


# -- compatibility ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class CompatReport:
    embedder_id: str
    other_embedder_id: str
    other_counts: dict[str, int]
    sample: int
    mean: float | None
    minimum: float | None
    worst: list[tuple[str, float]]
    threshold: float
    problem: str | None = None

    @property
    def passed(self) -> bool:
        return self.problem is None and self.minimum is not None and self.minimum >= self.threshold


async def check_compat(
    source: Path,
    embedder: Embedder,
    sample: int = 100,
    other_embedder_id: str | None = None,
    threshold: float = COMPAT_THRESHOLD,
    seed: int = 0,
    progress: Progress | None = None,
) -> CompatReport:
    """Embed a sample of the other pool's texts with `embedder` and compare with their stored
    vectors (cosine on unit vectors). The minimum must reach `threshold` to pass."""
    other = await open_other(source)
    try:
        rows = await _other_rows(other)
    finally:
        await other.close()
    counts = dict(Counter(str(row["embedder_id"]) for row in rows).most_common())
    if not counts:
        raise PoolToolError(f"{source}: its pool is empty")
    chosen = other_embedder_id or next(iter(counts))
    if chosen not in counts:
        raise PoolToolError(f"{source}: no pool rows of embedder {chosen}")
    picked = [row for row in rows if row["embedder_id"] == chosen]
    picked = random.Random(seed).sample(picked, min(sample, len(picked)))

    def report(**values: object) -> CompatReport:
        base: dict[str, object] = {
            "embedder_id": embedder.id,
            "other_embedder_id": chosen,
            "other_counts": counts,
            "sample": len(picked),
            "mean": None,
            "minimum": None,
            "worst": [],
            "threshold": threshold,
        }
        return CompatReport(**(base | values))  # type: ignore[arg-type]

    sizes = {len(row["embedding"]) for row in picked}
    if sizes != {4 * embedder.dim}:
        dims = ", ".join(str(size // 4) for size in sorted(sizes))
        return report(
            problem=f"stored vectors have {dims} dimensions, this embedder {embedder.dim}"
        )
    stored = np.frombuffer(b"".join(row["embedding"] for row in picked), np.float32)
    stored = stored.reshape(len(picked), embedder.dim)
    fresh = np.empty_like(stored)
    for start in range(0, len(picked), EMBED_BATCH):
        chunk = picked[start : start + EMBED_BATCH]
        fresh[start : start + len(chunk)] = embedder.embed([row["text"] for row in chunk])
        if progress is not None:
            progress(min(start + EMBED_BATCH, len(picked)), len(picked))
    norms = np.linalg.norm(stored, axis=1) * np.linalg.norm(fresh, axis=1)
    cosines = np.einsum("ij,ij->i", stored, fresh) / np.maximum(norms, 1e-12)
    order = np.argsort(cosines)[:5]
    return report(
        mean=float(cosines.mean()),
        minimum=float(cosines.min()),
        worst=[(picked[i]["text"], float(cosines[i])) for i in order],
    )


# -- near duplicates ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Cluster:
    """Entries at or above the threshold to the kept one (the earliest stored)."""

    keep: int  # index into the StoredPool
    removed: list[tuple[int, float]]  # (index, similarity to the kept entry)


@dataclass(frozen=True)
class DedupePlan:
    pool: StoredPool
    threshold: float
    clusters: list[Cluster]

    @property
    def removed(self) -> int:
        return sum(len(cluster.removed) for cluster in self.clusters)

    def label_conflicts(self) -> list[Cluster]:
        """Clusters whose removed entries carry another category than the kept one."""
        categories = self.pool.categories
        return [
            cluster
            for cluster in self.clusters
            if any(categories[i] != categories[cluster.keep] for i, _ in cluster.removed)
        ]


def plan_dedupe(
    pool: StoredPool, threshold: float, block: int = 512, progress: Progress | None = None
) -> DedupePlan:
    """Leader clustering in id order: an entry joins the most similar earlier kept entry at or
    above `threshold`, else it is kept. No chaining: every member is that close to its leader."""
    with one_blas_thread():
        return _plan_dedupe(pool, threshold, block, progress)


def _plan_dedupe(
    pool: StoredPool, threshold: float, block: int, progress: Progress | None
) -> DedupePlan:
    vectors = pool.vectors
    n = len(vectors)
    leader_of = np.full(n, -1, dtype=np.int64)
    similarity = np.zeros(n, dtype=np.float32)
    leaders: list[int] = []
    leader_vectors = np.empty((0, vectors.shape[1] if n else 0), dtype=np.float32)
    for start in range(0, n, block):
        stop = min(start + block, n)
        chunk = vectors[start:stop]
        if len(leaders):
            sims = chunk @ leader_vectors.T
            best = sims.argmax(axis=1)
            best_sims = sims[np.arange(len(chunk)), best]
            hit = best_sims >= threshold
            leader_of[start:stop][hit] = np.asarray(leaders)[best[hit]]
            similarity[start:stop][hit] = best_sims[hit]
        inner = chunk @ chunk.T
        fresh: list[int] = []
        for row in range(stop - start):
            if leader_of[start + row] >= 0:
                continue
            if fresh:
                sims = inner[row, fresh]
                best_local = int(sims.argmax())
                if sims[best_local] >= threshold:
                    leader_of[start + row] = start + fresh[best_local]
                    similarity[start + row] = sims[best_local]
                    continue
            fresh.append(row)
        leaders.extend(start + row for row in fresh)
        leader_vectors = np.concatenate([leader_vectors, chunk[fresh]])
        if progress is not None:
            progress(stop, n)
    members: dict[int, list[tuple[int, float]]] = {}
    for index in np.flatnonzero(leader_of >= 0):
        members.setdefault(int(leader_of[index]), []).append((int(index), float(similarity[index])))
    clusters = [Cluster(keep, removed) for keep, removed in sorted(members.items())]
    clusters.sort(key=lambda cluster: -len(cluster.removed))
    return DedupePlan(pool=pool, threshold=threshold, clusters=clusters)


async def apply_dedupe(conn: Database, plan: DedupePlan) -> int:
    """Delete every cluster's removed entries in one transaction; return how many."""
    ids = [(plan.pool.ids[i],) for cluster in plan.clusters for i, _ in cluster.removed]
    async with conn.transaction():
        before = await conn.fetch_one("SELECT COUNT(*) FROM pool")
        await conn.execute_many("DELETE FROM pool WHERE id = ?", ids)
        after = await conn.fetch_one("SELECT COUNT(*) FROM pool")
    return int(before[0] if before else 0) - int(after[0] if after else 0)
