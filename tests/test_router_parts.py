"""A ModelRouter built from fake parts, without a database file or a model: any encoder behind
`Embedder(encoder)`, a small pool held in memory, and an in-memory connection."""

from __future__ import annotations

import zlib

import numpy as np

from router.embedding.embedder import Embedder
from router.pool.pool import Pool
from router.router import ModelRouter
from router.signals.calibration import Calibration
from router.text import text_hash
from tests.conftest import make_config
from tests.db_helpers import open_db


class WordsEncoder:
    """A bag of words hashed into a few dimensions: messages that share words are near."""

    id = "fake:words:none"
    dim = 32

    def __init__(self) -> None:
        self.calls = 0

    def encode(self, texts: list[str]) -> np.ndarray:
        self.calls += 1
        rows = np.zeros((len(texts), self.dim), np.float32)
        for row, text in zip(rows, texts, strict=True):
            for word in text.lower().split():
                row[zlib.crc32(word.encode()) % self.dim] += 1.0
        return rows / np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-6)

    def token_count(self, text: str) -> int:
        return len(text.split())


CASUAL = [
    "good morning everyone",
    "good night and sleep well",
    "thanks so much dear",
    "see you at dinner tonight",
    "happy birthday grandma",
    "good morning sunshine",
    "thanks for dinner everyone",
    "love you all good night",
    "see you tomorrow morning",
    "happy sunday everyone",
    "thanks grandma love you",
    "dinner is ready everyone",
]
CODING = [
    "fix my python code please",
    "python script raises keyerror",
    "write a sql query to count orders",
    "debug this javascript function",
    "my python code crashes with a traceback",
    "regex to match an email address",
    "sql query is too slow",
    "refactor this python function",
    "bash script to rename files",
    "why does this javascript code fail",
    "write a python function to sort a list",
    "fix the sql join in my query",
]


async def test_a_router_from_fake_parts_routes_a_message():
    config = make_config(":memory:", "live", categorizer={"enabled": False})
    encoder = WordsEncoder()
    embedder = Embedder(encoder)
    conn = await open_db(":memory:")
    texts = CASUAL + CODING
    categories = ["casual"] * len(CASUAL) + ["coding"] * len(CODING)
    vectors = embedder.embed(texts)
    rows = [
        (encoder.id, text_hash(text), text, vector.tobytes(), category)
        for text, vector, category in zip(texts, vectors, categories, strict=True)
    ]
    pool = Pool(conn, encoder.id, encoder.dim)
    assert await pool.load(rows) == len(texts)
    router = ModelRouter(config, conn, embedder, pool, None, None, "live")
    assert router.local is not None
    router.local.classifier = router.local.fit(Calibration())
    try:
        decision = await router.route("please fix this python code")
        router.finish(decision, "routed")
    finally:
        await router.close()
        embedder.close()
    assert (decision.source, decision.category, decision.tier) == ("knn", "coding", "strong")
    assert decision.error is None and router.counters["fallbacks"] == 0
    assert encoder.calls == 2  # the pool, then the message
