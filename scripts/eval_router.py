"""Score the local routing signal on the held-out dev set: tier and category accuracy, downgrades,
per language, on single messages and on the follow-up turns of conversations.

    python scripts/eval_router.py [--classifier blend|knn|head] [--downgrade-cost 2.5] [--k 10]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import tempfile
from collections import defaultdict
from pathlib import Path

from bot.config import CrabbotConfig
from router import ModelRouter, Secrets
from router.taxonomy import TIERS

DEV_SET = Path(__file__).resolve().parent.parent / "tests" / "data" / "dev_set.jsonl"
CACHE = Path(tempfile.gettempdir()) / "crabbot-eval-seeded.db"


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
            return f"{name:<22}{0:>5}"
        pct = lambda x: f"{100 * x / self.n:6.1f}%"  # noqa: E731
        return (
            f"{name:<22}{self.n:>5}  tier {pct(self.tier_ok)}  category {pct(self.category_ok)}"
            f"  downgrades {pct(self.downgrades)}"
        )


def config_for(db: Path, args: argparse.Namespace) -> CrabbotConfig:
    return CrabbotConfig.model_validate(
        {
            "database": {"path": str(db)},
            "routing": {"mode": "live"},
            "categorizer": {"enabled": False},
            "embedding": {"max_input_tokens": args.max_tokens},
            "local": {
                "classifier": args.classifier,
                "downgrade_cost": args.downgrade_cost,
                "k": args.k,
                "min_confidence": 0.0,
            },
        }
    )


async def evaluate(args: argparse.Namespace) -> None:
    work = Path(tempfile.mkdtemp()) / "eval.db"
    if CACHE.exists() and not args.fresh:
        shutil.copyfile(CACHE, work)
    router = await ModelRouter.open(config_for(work, args), Secrets(groq_api_key=None))
    if not CACHE.exists() or args.fresh:
        await router.close()
        shutil.copyfile(work, CACHE)
        router = await ModelRouter.open(config_for(work, args), Secrets(groq_api_key=None))
    taxonomy = router.taxonomy
    singles: dict[str, Score] = defaultdict(Score)
    follow_ups: dict[str, Score] = defaultdict(Score)
    misses: list[str] = []
    try:
        for number, line in enumerate(DEV_SET.read_text(encoding="utf-8").splitlines()):
            if not line.strip():
                continue
            item = json.loads(line)
            if "turns" not in item:
                decision = await router.route(item["text"])
                truth = item["category"]
                for key in ("all", item.get("lang", "?")):
                    singles[key].add(
                        taxonomy.tier_of(truth), truth, decision.tier, decision.category
                    )
                if decision.tier != taxonomy.tier_of(truth):
                    misses.append(f"  {truth:>13} -> {decision.category:<13} {item['text'][:60]}")
                continue
            at = 1_800_000_000.0 + number * 100_000
            conv = f"eval:{item['conversation']}"
            for index, turn in enumerate(item["turns"]):
                at += turn.get("gap_s", 0)
                decision = await router.route(turn["text"], conv_key=conv, at=at)
                if index == 0:
                    continue
                truth = turn["category"]
                follow_ups["all"].add(
                    taxonomy.tier_of(truth), truth, decision.tier, decision.category
                )
                if decision.tier != taxonomy.tier_of(truth):
                    misses.append(
                        f"  [conv] {truth:>6} -> {decision.category:<13} {turn['text'][:50]}"
                    )
    finally:
        await router.close()
    print(
        f"pool {router.pool_size} entries; classifier {args.classifier}, "
        f"downgrade cost {args.downgrade_cost}, k {args.k}"
    )
    print("single messages")
    for key in sorted(singles, key=lambda k: (k != "all", k)):
        print("  " + singles[key].row(key))
    print("follow-up turns")
    print("  " + follow_ups["all"].row("all"))
    if args.misses:
        print("tier misses:")
        print("\n".join(misses))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--classifier", choices=("head", "blend", "knn"), default="head")
    parser.add_argument("--downgrade-cost", type=float, default=2.5)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--max-tokens", type=int, default=48, help="embedding input cap")
    parser.add_argument("--fresh", action="store_true", help="re-embed the seed pool")
    parser.add_argument("--misses", action="store_true", help="list the tier misses")
    asyncio.run(evaluate(parser.parse_args()))


if __name__ == "__main__":
    main()
