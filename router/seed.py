"""The seed pool shipped with crabbot: labelled family-chat messages, embedded into an empty pool
on first start."""

from __future__ import annotations

import json
from collections.abc import Callable
from importlib import resources

import numpy as np

from router.embedder import Embedder
from router.pool import Pool, PoolEntry
from router.taxonomy import Taxonomy

SEED_FILE = "seed_pool.jsonl"

ProgressCallback = Callable[[int, int], None]


def load_seed_entries(taxonomy: Taxonomy) -> list[tuple[str, str]]:
    """(text, category) pairs whose category the taxonomy knows."""
    raw = resources.files("router").joinpath("data", SEED_FILE).read_text(encoding="utf-8")
    entries: list[tuple[str, str]] = []
    for line in raw.splitlines():
        if not line.strip():
            continue
        row = json.loads(line)
        if row["category"] in taxonomy.category_tiers:
            entries.append((row["text"], row["category"]))
    return entries


async def seed_pool(
    pool: Pool, embedder: Embedder, taxonomy: Taxonomy, progress: ProgressCallback | None
) -> None:
    """Embed the shipped seed entries into an empty pool, reporting (done, total) as it goes."""
    entries = load_seed_entries(taxonomy)
    batch = 32
    vectors: list[np.ndarray] = []
    for start in range(0, len(entries), batch):
        chunk = [text for text, _ in entries[start : start + batch]]
        vectors.append(await embedder.aembed(chunk))
        if progress is not None:
            progress(min(start + batch, len(entries)), len(entries))
    matrix = np.concatenate(vectors) if vectors else np.empty((0, pool.dim), np.float32)
    await pool.add_many(
        [
            PoolEntry(text, category, vector, "seed", None)
            for (text, category), vector in zip(entries, matrix, strict=True)
        ]
    )
