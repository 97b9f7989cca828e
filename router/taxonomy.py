"""The task taxonomy: categories, tiers, and the versioned category -> tier maps."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Mode = Literal["off", "shadow", "live"]
TIERS: tuple[str, ...] = ("cheap", "medium", "strong")
MODES: tuple[Mode, ...] = ("off", "shadow", "live")
UNKNOWN = "unknown"


def as_mode(value: str | None) -> Mode | None:
    """`value` as a routing mode, or None when it names none."""
    for mode in MODES:
        if value == mode:
            return mode
    return None


MAPPING_V2: dict[str, str] = {
    "casual": "cheap",
    "simple_lookup": "cheap",
    "creative": "medium",
    "analysis": "medium",
    "coding": "strong",
    "reasoning": "strong",
    UNKNOWN: "medium",
}

MAPPING_V1: dict[str, str] = {**MAPPING_V2, "research_lookup": "medium"}

BUILTIN_MAPPINGS: dict[str, dict[str, str]] = {"v1": MAPPING_V1, "v2": MAPPING_V2}

CATEGORY_DESCRIPTIONS: dict[str, str] = {
    "casual": "greetings, small talk, thanks, reactions, feelings, family logistics",
    "simple_lookup": "one fact, a definition, a conversion, a quick translation",
    "research_lookup": "research questions needing synthesis (medical, legal, tax, GDPR)",
    "creative": "stories, poems, wishes, captions, slogans, marketing copy",
    "analysis": "summarize, compare, explain, review; research questions (medical, legal, tax)",
    "coding": "write or debug code, SQL, shell, regex, formulas, config, software design",
    "reasoning": "multi-step logic, maths, puzzles, planning under constraints, trade-offs",
    UNKNOWN: "only what cannot be read at all",
}


@dataclass(frozen=True)
class Taxonomy:
    """A category -> tier map under a version name, with the tier order cheap < medium < strong."""

    version: str
    category_tiers: dict[str, str]

    @property
    def categories(self) -> tuple[str, ...]:
        return tuple(self.category_tiers)

    def tier_of(self, category: str) -> str:
        return self.category_tiers[category]

    def describe(self, category: str) -> str:
        return CATEGORY_DESCRIPTIONS.get(category, category.replace("_", " "))
