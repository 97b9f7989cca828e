"""The per-conversation context prior: the last decision of a `conv_key` pulls a short follow-up
toward the same task, fading with the gap; a confident signal for something new still wins."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from router.config import ContextSettings


@dataclass(frozen=True)
class PreviousTurn:
    category: str
    at: float
    text: str


def prior_weight(settings: ContextSettings, gap_s: float, text: str) -> float:
    """How much the previous task counts: most for short, quick follow-ups; nothing past max_gap."""
    if not settings.enabled or gap_s > settings.max_gap_s:
        return 0.0
    fade = 0.5 ** (max(gap_s, 0.0) / settings.half_life_s)
    length = len(text.strip())
    shortness = 1.0 if length <= settings.short_chars else settings.short_chars / length
    return settings.weight * fade * shortness


def apply_prior(probs: np.ndarray, previous_index: int, weight: float) -> np.ndarray:
    """Bayes with a prior that puts `weight` on the previous category and spreads the rest."""
    if weight <= 0.0:
        return probs
    prior = np.full(len(probs), (1.0 - weight) / len(probs))
    prior[previous_index] += weight
    posterior = probs * prior
    total = posterior.sum()
    return posterior / total if total > 0 else probs
