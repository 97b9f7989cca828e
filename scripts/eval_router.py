"""Score the local routing signal (live mode, no keys) on the frozen test split, or the dev set:
tier accuracy and downgrades with counts and 95% Wilson intervals, single messages by language,
follow-ups with the conversation key and real gaps (continuations and topic switches apart), and
the same follow-ups sent the proxy's way (history in `messages`, no session key).

    python scripts/eval_router.py [--split test|dev|dev2] [--misses]

The test split was written apart from the pool and nothing is fit or tuned on it; tune by
cross-validation on the training data instead (`crabbot pool validate`,
scripts/fit_continuity.py)."""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import tempfile
from collections import defaultdict
from pathlib import Path
from typing import Any

from bot.config import CrabbotConfig
from router import Secrets, open_router
from router.taxonomy import TIERS

DATA = Path(__file__).resolve().parent.parent / "tests" / "data"
SPLITS = {
    "test": DATA / "test_set.jsonl",
    "dev": DATA / "dev_set.jsonl",
    "dev2": DATA / "dev2_set.jsonl",
}


NEAR = 0.93  # cosine to the nearest pooled message, above which a message is a near paraphrase


def wilson(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    if n == 0:
        return 0.0, 0.0
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


class Score:
    def __init__(self) -> None:
        self.n = self.tier_ok = self.category_ok = self.downgrades = 0

    def add(self, truth_tier: str, truth_category: str, tier: str, category: str | None) -> None:
        self.n += 1
        self.tier_ok += tier == truth_tier
        self.category_ok += category == truth_category
        self.downgrades += TIERS.index(tier) < TIERS.index(truth_tier)

    def row(self, name: str) -> str:
        if not self.n:
            return f"  {name:<26}{0:>5}"
        low, high = wilson(self.tier_ok, self.n)
        down_low, down_high = wilson(self.downgrades, self.n)
        return (
            f"  {name:<26}{self.n:>5}  tier {self.tier_ok / self.n:.3f} [{low:.3f}, {high:.3f}]"
            f"  downgrades {self.downgrades / self.n:.3f} [{down_low:.3f}, {down_high:.3f}]"
            f"  category {self.category_ok / self.n:.3f}"
        )


def config_for(db: Path) -> CrabbotConfig:
    return CrabbotConfig.model_validate(
        {
            "database": {"path": str(db)},
            "routing": {"mode": "live"},
            "categorizer": {"enabled": False},
        }
    )


def closeness(decision: Any) -> str:
    """Whether the pool holds a near paraphrase of the message: figures on the far ones say
    how the router does on text unlike anything it was given."""
    nearest = decision.neighbours[0].similarity if decision.neighbours else 0.0
    return f"pool nearest >= {NEAR}" if nearest >= NEAR else f"pool nearest < {NEAR}"


async def evaluate(split: Path, show_misses: bool) -> None:
    rows = [json.loads(line) for line in split.read_text(encoding="utf-8").splitlines() if line]
    work = Path(tempfile.mkdtemp()) / "eval.db"
    router = await open_router(config_for(work), Secrets(groq_api_key=None))
    tier_of = router.taxonomy.tier_of
    singles: dict[str, Score] = defaultdict(Score)
    keyed: dict[str, Score] = defaultdict(Score)
    stateless: dict[str, Score] = defaultdict(Score)
    misses: list[str] = []

    def note(
        scores: dict[str, Score], keys: list[str], truth: str, decision: Any, text: str, tag: str
    ) -> None:
        for key in keys:
            scores[key].add(tier_of(truth), truth, decision.tier, decision.category)
        if decision.tier != tier_of(truth):
            misses.append(f"  {tag:<9}{truth:>13} -> {decision.category!s:<13} {text[:60]!r}")

    try:
        for number, item in enumerate(rows):
            if "turns" not in item:
                decision = await router.route(item["text"])
                router.finish(decision, "routed")
                note(
                    singles,
                    ["all", item["lang"], closeness(decision)],
                    item["category"],
                    decision,
                    item["text"],
                    "single",
                )
                continue
            at = 1_800_000_000.0 + number * 200_000
            conv = f"eval:{item['conversation']}"
            history: list[dict[str, str]] = []
            for index, turn in enumerate(item["turns"]):
                at += turn.get("gap_s", 0)
                with_key = await router.route(turn["text"], conv_key=conv, at=at)
                without_key = await router.route(turn["text"], history=history, at=at)
                router.finish(with_key, "routed")
                router.finish(without_key, "routed")
                history += [
                    {"role": "user", "content": turn["text"]},
                    {"role": "assistant", "content": "(answer)"},
                ]
                if index == 0:
                    continue
                kind = turn.get("kind", "follow-up")
                keys = ["all", kind, item.get("lang", "?")]
                note(keyed, keys, turn["category"], with_key, turn["text"], kind)
                note(stateless, keys, turn["category"], without_key, turn["text"], "proxy")
    finally:
        await router.close()
    print(
        f"{split.name}: pool {router.pool_size} entries, live mode, no keys; 95% Wilson intervals"
    )
    order = ("all", "continue", "switch", "zh-Hant", "zh-Hans", "en", "ja", "mixed")
    for title, scores in (
        ("single messages", singles),
        ("follow-ups, conversation key and real gaps", keyed),
        ("follow-ups sent statelessly (history in messages, no key)", stateless),
    ):
        print(title)
        for key in sorted(scores, key=lambda k: order.index(k) if k in order else 99):
            print(scores[key].row(key))
    if show_misses:
        print("tier misses:")
        print("\n".join(misses))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--split", choices=sorted(SPLITS), default="test")
    parser.add_argument("--misses", action="store_true", help="list the tier misses")
    args = parser.parse_args()
    asyncio.run(evaluate(SPLITS[args.split], args.misses))


if __name__ == "__main__":
    main()
