"""Score the local routing signal (live mode, no keys) on the frozen test split, or the dev set:
tier accuracy and downgrades with counts and 95% Wilson intervals, single messages by language,
follow-ups with the conversation key and real gaps (continuations and topic switches apart), and
the same follow-ups sent the proxy's way (history in `messages`, no session key).

    python scripts/eval_router.py [--split test|dev|dev2|...|dev13] [--misses]
                                  [--head-seed N]

The test split was written apart from the pool and nothing is fit or tuned on it; tune by
cross-validation on the training data instead (`crabbot pool validate`,
scripts/fit_continuity.py). One fit's figures move with the seed its head is fit from: compare a
change to the pool over a few `--head-seed`s, not on one fit."""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import shutil
import tempfile
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from conversations import context_of

from bot.config import CrabbotConfig
from router import Secrets, open_router
from router.signals.calibration import reliability
from router.signals.classifier import HiddenLayerHead
from router.taxonomy import TIERS
from router.text import split_quote

DATA = Path(__file__).resolve().parent.parent / "tests" / "data"
SPLITS = {
    "test": (DATA / "test_set.jsonl", DATA / "test_slices.jsonl"),
    "dev": (DATA / "dev_set.jsonl",),
    "dev2": (DATA / "dev2_set.jsonl",),
    "dev3": (DATA / "dev3_set.jsonl",),
    "dev4": (DATA / "dev4_set.jsonl",),
    "dev5": (DATA / "dev5_set.jsonl",),
    "dev6": (DATA / "dev6_set.jsonl",),
    "dev7": (DATA / "dev7_set.jsonl",),
    "dev8": (DATA / "dev8_set.jsonl",),
    "dev9": (DATA / "dev9_set.jsonl",),
    "dev10": (DATA / "dev10_set.jsonl",),
    "dev11": (DATA / "dev11_set.jsonl",),
    "dev12": (DATA / "dev12_set.jsonl",),
    "dev13": (DATA / "dev13_set.jsonl",),
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
        # (confidence, tier right, sure enough to skip the LLM in live mode)
        self.confidences: list[tuple[float, bool, bool]] = []

    def add(
        self,
        truth_tier: str,
        truth_category: str,
        tier: str,
        category: str | None,
        confidence: float | None = None,
        bar: float = 1.0,
    ) -> None:
        self.n += 1
        self.tier_ok += tier == truth_tier
        self.category_ok += category == truth_category
        self.downgrades += TIERS.index(tier) < TIERS.index(truth_tier)
        if confidence is not None:
            self.confidences.append((confidence, tier == truth_tier, confidence >= bar))

    def row(self, name: str, measure: str = "tier") -> str:
        """Counts, the tier accuracy (named `measure`) and the downgrades, with 95% intervals."""
        if not self.n:
            return f"  {name:<26}{0:>5}"
        low, high = wilson(self.tier_ok, self.n)
        down_low, down_high = wilson(self.downgrades, self.n)
        return (
            f"  {name:<26}{self.n:>5}  {measure} {self.tier_ok / self.n:.3f}"
            f" [{low:.3f}, {high:.3f}]"
            f"  downgrades {self.downgrades / self.n:.3f} [{down_low:.3f}, {down_high:.3f}]"
            f"  category {self.category_ok / self.n:.3f}"
        )

    def calibration_row(self, name: str) -> str:
        """Expected calibration error (10 bins), and the decisions confident enough to skip the
        LLM in live mode: their share and their tier accuracy."""
        if not self.confidences:
            return f"  {name:<26}{0:>5}"
        conf = np.array([c for c, _, _ in self.confidences])
        right = np.array([r for _, r, _ in self.confidences], dtype=float)
        ece, _ = reliability(conf, right)
        alone = np.array([sure for _, _, sure in self.confidences])
        n_alone, ok_alone = int(alone.sum()), int(right[alone].sum())
        low, high = wilson(ok_alone, n_alone)
        accuracy = ok_alone / n_alone if n_alone else 0.0
        return (
            f"  {name:<26}{len(conf):>5}  ECE {ece:.3f}  decided alone {n_alone / len(conf):.3f}"
            f" ({n_alone}), right {accuracy:.3f} [{low:.3f}, {high:.3f}]"
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


class Tally:
    """Scores by report section, then by key (all, kind, language)."""

    def __init__(self, live_bar: Callable[[bool], float]) -> None:
        self.sections: dict[str, dict[str, Score]] = defaultdict(lambda: defaultdict(Score))
        self.misses: list[str] = []
        self.live_bar = live_bar  # live mode's bar, by whether the conversation had a say

    def note(
        self, section: str, keys: list[str], truth: str, decision: Any, text: str, tier_of: Any
    ) -> None:
        bar = self.live_bar(decision.knn_swayed)
        for key in keys:
            self.sections[section][key].add(
                tier_of(truth), truth, decision.tier, decision.category, decision.confidence, bar
            )
        if decision.tier != tier_of(truth):
            self.misses.append(
                f"  {section[:24]:<25}{truth:>13} -> {decision.category!s:<13} {text[:60]!r}"
            )


async def evaluate(paths: tuple[Path, ...], show_misses: bool, db: Path | None = None) -> None:
    rows = [
        json.loads(line)
        for path in paths
        for line in path.read_text(encoding="utf-8").splitlines()
        if line
    ]
    work = Path(tempfile.mkdtemp()) / "eval.db"
    if db is not None:  # a copy: the evaluation's own turns must not reach that database
        shutil.copyfile(db, work)
        work.chmod(0o600)  # family messages: readable by this account only, as crabbot keeps them
    router = await open_router(config_for(work), Secrets(groq_api_key=None))
    tier_of = router.taxonomy.tier_of
    tally = Tally(router.config.live_bar)
    try:
        for number, item in enumerate(rows):
            slice_name = item.get("slice")
            if "turns" not in item:
                decision = await router.route(item["text"])
                router.finish(decision, "routed")
                section = f"single messages: {slice_name}" if slice_name else "single messages"
                keys = ["all", item["lang"]] + ([] if slice_name else [closeness(decision)])
                tally.note(section, keys, item["category"], decision, item["text"], tier_of)
                continue
            await route_conversation(router, item, number, tally, slice_name)
    finally:
        await router.close()
    names = ", ".join(path.name for path in paths)
    print(f"{names}: pool {router.pool_size} entries, live mode, no keys; 95% Wilson intervals")
    order = ("all", "continue", "switch", "reply", "zh-Hant", "zh-Hans", "en", "ja", "mixed")
    bars = router.config.local.min_confidence, router.config.context.min_confidence
    for title, scores in tally.sections.items():
        print(title)
        for key in sorted(scores, key=lambda k: order.index(k) if k in order else 99):
            print(scores[key].row(key))
    print(
        f"calibration (decided alone: calibrated confidence at or above live mode's bar,"
        f" {bars[0]:g}, or {bars[1]:g} when the conversation named the task)"
    )
    for title, scores in tally.sections.items():
        print(scores["all"].calibration_row(title[:26]))
    if show_misses:
        print("tier misses:")
        print("\n".join(tally.misses))


def sent_with_quote(words: str, quoted: str) -> str:
    """A reply as the bot sends it to a proxy: the words, then the quoted message."""
    lines = "\n".join(f"> {line}" for line in quoted.split("\n"))
    return f"{words}\n\n(replying to them:)\n{lines}"


async def route_conversation(
    router: Any, item: dict[str, Any], number: int, tally: Tally, slice_name: str | None
) -> None:
    """Each turn routed twice: with the conversation key and the speaker (the bot's way), and
    statelessly with the history in messages, speakers in `name` (the proxy's way)."""
    at = 1_800_000_000.0 + number * 200_000
    conv = f"eval:{item['conversation']}"
    history: list[dict[str, str]] = []
    turns = item["turns"]
    keyed_section = (
        f"conversations: {slice_name}"
        if slice_name
        else ("follow-ups, conversation key and real gaps")
    )
    stateless_section = (
        f"stateless: {slice_name}"
        if slice_name
        else "follow-ups sent statelessly (history in messages, no key)"
    )
    for index, turn in enumerate(turns):
        at += turn.get("gap_s", 0)
        speaker = turn.get("speaker")
        user_key = f"eval:{speaker}" if speaker else None
        # The bot hands the router a reply's words and the quoted message apart; through the
        # proxy it sends them in one message (bot/incoming.py), which the proxy splits again.
        quoted = turns[int(turn["reply_to"])]["text"] if "reply_to" in turn else None
        text = turn["text"] if quoted is None else sent_with_quote(turn["text"], quoted)
        with_key = await router.route(
            turn["text"], conv_key=conv, at=at, user_key=user_key, replied_to=quoted
        )
        words, quote = split_quote(text)
        without_key = await router.route(
            words, history=history, at=at, name=speaker, replied_to=quote
        )
        router.finish(with_key, "routed")
        router.finish(without_key, "routed")
        history += [
            {"role": "user", "content": text, **({"name": speaker} if speaker else {})},
            {"role": "assistant", "content": "(answer)"},
        ]
        if index == 0:
            continue
        has_context = context_of(turns, index) is not None
        kind = turn.get("kind", "follow-up" if has_context else "no context")
        keys = ["all", kind, item.get("lang", "?")] + (["reply"] if quoted else [])
        tally.note(
            keyed_section, keys, turn["category"], with_key, with_key.text, router.taxonomy.tier_of
        )
        tally.note(
            stateless_section, keys, turn["category"], without_key, text, router.taxonomy.tier_of
        )


def use_head_seed(offset: int) -> None:
    """Fit the local classifier's head from another seed than the product's (0): the same pool
    with another start, to see how much one fit's figures owe to it."""
    if offset == 0:
        return
    fit = HiddenLayerHead.fit

    def fit_from(
        self: HiddenLayerHead, vectors: np.ndarray, labels: list[str], seed: int = 0
    ) -> None:
        fit(self, vectors, labels, seed + offset)

    HiddenLayerHead.fit = fit_from  # type: ignore[method-assign]


def add_head_seed(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--head-seed",
        type=int,
        default=0,
        help="fit the head from the product's seed plus N (0: the product's own fit)",
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--split", choices=sorted(SPLITS), default="test")
    parser.add_argument("--misses", action="store_true", help="list the tier misses")
    parser.add_argument(
        "--db", type=Path, help="route on a copy of this SQLite database's pool (else the seed's)"
    )
    add_head_seed(parser)
    args = parser.parse_args()
    use_head_seed(args.head_seed)
    asyncio.run(evaluate(SPLITS[args.split], args.misses, args.db))


if __name__ == "__main__":
    main()
