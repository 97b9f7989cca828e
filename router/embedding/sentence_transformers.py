"""The full-precision encoder: any sentence-transformers model by name or local path (the
optional extra; it pulls in torch)."""

from __future__ import annotations

import os

import numpy as np

from router.embedding.base import CHARS_PER_TOKEN_BUDGET, PREFIX_CONVENTION, clip_text


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
