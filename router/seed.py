"""The seed pool shipped with crabbot: labelled family-chat messages embedded on first start."""

from __future__ import annotations

import json
from importlib import resources

from router.taxonomy import Taxonomy

SEED_FILE = "seed_pool.jsonl"


def load_seed_entries(taxonomy: Taxonomy) -> list[tuple[str, str]]:
    """(text, category) pairs whose category the taxonomy knows."""
    raw = resources.files("router").joinpath("data", SEED_FILE).read_text(encoding="utf-8")
    entries: list[tuple[str, str]] = []
    for line in raw.splitlines():
        if not line.strip():
            continue
        row = json.loads(line)
        if row["category"] in taxonomy.category_tiers:
            entries.append((row["text"], row["category"]))
    return entries
