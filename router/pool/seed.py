"""The seed pool shipped with crabbot: labelled family-chat messages, and their vectors embedded
once at build time, stored into an empty pool on first start (embedded there when the shipped
vectors are not this embedder's)."""

from __future__ import annotations

import hashlib
import io
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources

import numpy as np

from router.embedding.embedder import Embedder
from router.pool.pool import Pool, PoolEntry
from router.signals.calibration import Calibration
from router.taxonomy import Taxonomy

log = logging.getLogger(__name__)

SEED_FILE = "seed_pool.jsonl"
VECTORS_FILE = "seed_vectors.npz"  # written by scripts/build_seed_vectors.py
SPOT_CHECKS = 6  # shipped vectors re-embedded at start: a changed model must not slip in
SPOT_CHECK_COSINE = 0.99  # float16 storage keeps cosine above 0.999 for the same model
BATCH = 32

ProgressCallback = Callable[[int, int], None]


def _data_file(name: str) -> resources.abc.Traversable:
    return resources.files("router").joinpath("data", name)


def seed_rows() -> list[dict[str, str]]:
    raw = _data_file(SEED_FILE).read_text(encoding="utf-8")
    return [json.loads(line) for line in raw.splitlines() if line.strip()]


def seed_digest() -> str:
    """The shipped vectors belong to exactly this seed file."""
    return hashlib.sha256(_data_file(SEED_FILE).read_bytes()).hexdigest()


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


def shipped_vectors(embedder: Embedder) -> ShippedVectors | None:
    """The shipped vectors by seed text, when they were made by this embedder for this seed file
    and a spot check agrees; else None (the caller embeds)."""
    try:
        with _data_file(VECTORS_FILE).open("rb") as handle, np.load(handle) as data:
            vectors = data["vectors"].astype(np.float32)
            embedder_id, digest = str(data["embedder_id"]), str(data["seed_sha256"])
            calibration = Calibration(*(float(x) for x in data["calibration"]))
    except (OSError, KeyError, ValueError, TypeError):
        return None
    rows = seed_rows()
    if embedder_id != embedder.id or digest != seed_digest() or len(vectors) != len(rows):
        return None
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    picks = np.linspace(0, len(rows) - 1, SPOT_CHECKS).astype(int)
    fresh = embedder.embed([rows[i]["text"] for i in picks])
    agreement = np.sum(fresh * vectors[picks], axis=1)
    if float(agreement.min()) < SPOT_CHECK_COSINE:
        log.warning(
            "the shipped seed vectors disagree with %s (cosine %.3f): embedding the seed pool",
            embedder.id,
            float(agreement.min()),
        )
        return None
    return ShippedVectors({row["text"]: vectors[i] for i, row in enumerate(rows)}, calibration)


async def seed_pool(
    pool: Pool, embedder: Embedder, taxonomy: Taxonomy, progress: ProgressCallback | None
) -> Calibration | None:
    """Fill an empty pool with the seed entries: the shipped vectors when they are this
    embedder's (then return their calibration, made for the whole seed pool), else embedded
    here, reporting (done, total) as it goes."""
    entries = load_seed_entries(taxonomy)
    shipped = shipped_vectors(embedder)
    if shipped is not None:
        matrix = np.stack([shipped.by_text[text] for text, _ in entries]) if entries else None
        if progress is not None:
            progress(len(entries), len(entries))
    else:
        vectors: list[np.ndarray] = []
        for start in range(0, len(entries), BATCH):
            chunk = [text for text, _ in entries[start : start + BATCH]]
            vectors.append(await embedder.aembed(chunk))
            if progress is not None:
                progress(min(start + BATCH, len(entries)), len(entries))
        matrix = np.concatenate(vectors) if vectors else None
    if matrix is None:
        return None
    await pool.add_many(
        [
            PoolEntry(text, category, vector, "seed", None)
            for (text, category), vector in zip(entries, matrix, strict=True)
        ]
    )
    if shipped is None or len(entries) != len(shipped.by_text):
        return None  # the calibration was made for the whole shipped pool
    return shipped.calibration
