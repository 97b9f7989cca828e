"""The Encoder protocol every embedding model meets (an id kept with its vectors, the dimension,
encode and token_count), and what the encoders share: the prefix convention and clipping."""

from __future__ import annotations

from typing import Protocol

import numpy as np

# e5 models want a prefix; crabbot compares messages with messages (a symmetric task), so every
# text, pooled or incoming, is embedded as a "query: ". The convention is part of the embedder id.
PREFIX_CONVENTION = "query"
CHARS_PER_TOKEN_BUDGET = 4


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
