"""The seed pool shipped with crabbot: labelled family-chat messages, and their vectors embedded
once at build time, given to each embedder's pool at start, each entry once: all on first start,
a new release's new ones later (embedded there when the shipped vectors are not this embedder's)."""

from __future__ import annotations

import hashlib
import io
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources

import numpy as np

from router.embedding.embedder import Embedder
from router.pool.pool import Pool, PoolEntry
from router.signals.calibration import SERVES_GROWTH, Calibration
from router.store import seed_given
from router.taxonomy import Taxonomy
from router.text import text_hash

log = logging.getLogger(__name__)

SEED_FILE = "seed_pool.jsonl"
VECTORS_FILE = "seed_vectors.npz"  # written by scripts/build_seed_vectors.py
SPOT_CHECKS = 6  # shipped vectors re-embedded at start: a changed model must not slip in
SPOT_CHECK_COSINE = 0.99  # float16 storage keeps cosine above 0.999 for the same model
BATCH = 32

ProgressCallback = Callable[[int, int], None]


# Where the shipped files are read from (a test points it at an older release's folder).
DATA: resources.abc.Traversable = resources.files("router").joinpath("data")


def _data_file(name: str) -> resources.abc.Traversable:
    return DATA.joinpath(name)


def seed_rows() -> list[dict[str, str]]:
    raw = _data_file(SEED_FILE).read_text(encoding="utf-8")
    return [json.loads(line) for line in raw.splitlines() if line.strip()]


def seed_digest() -> str:
    """The shipped vectors belong to exactly this seed file."""
    return hashlib.sha256(_data_file(SEED_FILE).read_bytes()).hexdigest()


def seed_mark(taxonomy: Taxonomy) -> str:
    """Names this seed file under the categories this taxonomy knows: a pool given all of its
    entries stores it, so the next start with the same has nothing to look for."""
    known = ",".join(sorted(taxonomy.category_tiers))
    return hashlib.sha256(f"{seed_digest()}\n{known}".encode()).hexdigest()


def load_seed_entries(taxonomy: Taxonomy) -> list[tuple[str, str]]:
    """(text, category) pairs whose category the taxonomy knows."""
    return [
        (row["text"], row["category"])
        for row in seed_rows()
        if row["category"] in taxonomy.category_tiers
    ]


def write_seed_vectors(vectors: np.ndarray, embedder_id: str, calibration: Calibration) -> bytes:
    """The npz bytes of the shipped vectors (float16, one row a seed line, in file order) and
    the local classifier's cross-validated calibration on them."""
    buffer = io.BytesIO()
    np.savez_compressed(
        buffer,
        vectors=vectors.astype(np.float16),
        embedder_id=np.array(embedder_id),
        seed_sha256=np.array(seed_digest()),
        calibration=np.array(
            [
                calibration.head_scale,
                calibration.ngram_scale,
                calibration.far_slope,
                calibration.far_pivot,
            ]
        ),
    )
    return buffer.getvalue()


@dataclass(frozen=True)
class ShippedVectors:
    by_text: dict[str, np.ndarray]
    calibration: Calibration


@dataclass(frozen=True)
class _ShippedFile:
    vectors: np.ndarray  # unit rows, one a seed line, in file order
    calibration: Calibration


def _shipped_file(embedder_id: str, rows: list[dict[str, str]]) -> _ShippedFile | None:
    """The shipped vectors file, when it was made by `embedder_id` for this seed file (`rows`,
    one vector each); else None."""
    try:
        with _data_file(VECTORS_FILE).open("rb") as handle, np.load(handle) as data:
            vectors = data["vectors"].astype(np.float32)
            made_by, digest = str(data["embedder_id"]), str(data["seed_sha256"])
            calibration = Calibration(*(float(x) for x in data["calibration"]))
    except (OSError, KeyError, ValueError, TypeError):
        return None
    if made_by != embedder_id or digest != seed_digest() or len(vectors) != len(rows):
        return None
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return _ShippedFile(vectors, calibration)


def _spot_picks(rows: list[dict[str, str]]) -> np.ndarray:
    """The seed lines whose vectors are checked: the first, the last and evenly between."""
    return np.linspace(0, len(rows) - 1, SPOT_CHECKS).astype(int)


def shipped_vectors(embedder: Embedder) -> ShippedVectors | None:
    """The shipped vectors by seed text, when they were made by this embedder for this seed file
    and a spot check agrees; else None (the caller embeds)."""
    rows = seed_rows()
    shipped = _shipped_file(embedder.id, rows)
    if shipped is None:
        return None
    picks = _spot_picks(rows)
    fresh = embedder.embed([rows[i]["text"] for i in picks])
    agreement = np.sum(fresh * shipped.vectors[picks], axis=1)
    if float(agreement.min()) < SPOT_CHECK_COSINE:
        log.warning(
            "the shipped seed vectors disagree with %s (cosine %.3f): embedding the seed pool",
            embedder.id,
            float(agreement.min()),
        )
        return None
    by_text = {row["text"]: shipped.vectors[i] for i, row in enumerate(rows)}
    return ShippedVectors(by_text, shipped.calibration)


async def seed_pool(
    pool: Pool, embedder: Embedder, taxonomy: Taxonomy, progress: ProgressCallback | None
) -> int:
    """Give the pool the seed entries it has never been given (seed_given): every one on first
    start, a new release's new ones later; never one it was given and lost since (a dedupe, an
    admin's hand), nor a text it holds (a label the family gave stays). Their
    vectors are the shipped ones when they are this embedder's, else embedded here, reporting
    (done, total) as it goes. Return how many entries it added."""
    conn, embedder_id = pool.conn, pool.embedder_id
    mark = seed_mark(taxonomy)
    if await seed_given.mark(conn, embedder_id) == mark:
        return 0  # this seed file is all given: the start reads nothing more
    was_empty = len(pool) == 0
    entries = load_seed_entries(taxonomy)
    given = await seed_given.given(conn, embedder_id)
    offered: dict[str, tuple[str, str]] = {}
    for text, category in entries:
        digest = text_hash(text)
        if digest not in given:
            offered.setdefault(digest, (text, category))
    wanted = [entry for entry in offered.values() if not pool.contains_text(entry[0])]
    shipped = shipped_vectors(embedder) if wanted else None
    vectors = await _vectors(wanted, embedder, shipped, progress)
    added = await pool.add_many(
        [
            PoolEntry(text, category, vector, "seed", None)
            for (text, category), vector in zip(wanted, vectors, strict=True)
        ],
        also=seed_given.record(embedder_id, list(offered), mark, time.time()),
    )
    if added and was_empty:
        log.info("seeded the pool with %d entries", added)
    elif added:
        log.info("this release's seed pool added %d new entries to the pool", added)
    return added


def shipped_calibration(pool: Pool) -> Calibration | None:
    """The calibration shipped with the seed vectors, when `pool` holds them (its stored vectors
    of the spot-checked seed texts are the shipped ones: not a pool embedded apart because the
    spot check failed, nor another pool of the same size) and is about the seed pool's size. It
    was chosen by held-out writer on that pool, which a start's own calibration (random folds)
    cannot do. Reads the shipped file: call it only when no stored calibration serves."""
    rows = seed_rows()
    slack = SERVES_GROWTH
    if not len(rows) / slack <= len(pool) <= len(rows) * slack:
        return None
    shipped = _shipped_file(pool.embedder_id, rows)
    if shipped is None:
        return None
    position = {text: i for i, text in enumerate(pool.texts)}
    vectors = pool.vectors
    for pick in _spot_picks(rows):
        held = position.get(rows[pick]["text"])
        if held is None or float(vectors[held] @ shipped.vectors[pick]) < SPOT_CHECK_COSINE:
            return None
    return shipped.calibration


async def _vectors(
    entries: list[tuple[str, str]],
    embedder: Embedder,
    shipped: ShippedVectors | None,
    progress: ProgressCallback | None,
) -> list[np.ndarray]:
    """The entries' vectors: the shipped ones, else embedded here in batches."""
    if shipped is not None:
        if progress is not None:
            progress(len(entries), len(entries))
        return [shipped.by_text[text] for text, _ in entries]
    vectors: list[np.ndarray] = []
    for start in range(0, len(entries), BATCH):
        chunk = [text for text, _ in entries[start : start + BATCH]]
        vectors.extend(await embedder.aembed(chunk))
        if progress is not None:
            progress(min(start + BATCH, len(entries)), len(entries))
    return vectors
