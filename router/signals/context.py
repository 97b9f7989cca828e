"""The per-conversation context prior: the last decision of a `conv_key` pulls a short follow-up
toward the same task, fading with the gap; a clear signal for something new still wins."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from router.config import ContextSettings


@dataclass(frozen=True)
class PreviousTurn:
    category: str
    at: float
    text: str


def prior_strength(settings: ContextSettings, gap_s: float, text: str) -> float:
    """The previous task's head start, in log10 odds: full for a short, quick follow-up, fading
    with the gap (half-life) and with the message's length, and nothing past max_gap_s."""
    if not settings.enabled or gap_s > settings.max_gap_s:
        return 0.0
    fade = 0.5 ** (max(gap_s, 0.0) / settings.half_life_s)
    length = len(text.strip())
    shortness = 1.0 if length <= settings.short_chars else settings.short_chars / length
    return settings.strength * fade * shortness


def apply_prior(probs: np.ndarray, previous_index: int, strength: float) -> np.ndarray:
    """Bayes: multiply the previous category's odds by 10**strength, then renormalize."""
    if strength <= 0.0:
        return probs
    posterior = probs.copy()
    posterior[previous_index] *= 10.0**strength
    total = posterior.sum()
    return posterior / total if total > 0 else probs
