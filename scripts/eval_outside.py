"""Score routing on public human chit-chat that nobody wrote for crabbot (measurement only: the
corpus is read from where you put it, never copied into the pool or the test splits). Every
message of such a corpus is chatter between people, so it should route cheap.

    python scripts/eval_outside.py topical-chat PATH [--sample 500] [--conversations 60]
    python scripts/eval_outside.py daily-dialogue-ja PATH...

Topical-Chat (github.com/alexa/Topical-Chat, conversations/*.json) is English; the Japanese
daily dialogues (github.com/jqk09a/japanese-daily-dialogue, data/topic*.json) are role-played
and some of their turns are real requests by the labelling rules (asking how two kinds of health
check differ is analysis), so their cheap share is a floor, not a score. Prints the cheap
share of single messages and of the turns of whole conversations (two speakers in one keyed
group chat, 20 s apart), the share decided without the LLM in live mode and how often those
decisions are right, with 95% Wilson intervals."""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import tempfile
from collections.abc import Callable
from pathlib import Path

from eval_router import Score, add_head_seed, config_for, use_head_seed

from router import Secrets, open_router
from router.decision import RoutingDecision

GAP_S = 20.0  # between turns of a conversation: people chatting, not hours apart
Conversation = list[tuple[str, str]]  # (speaker, text), in order


def topical_chat(paths: list[Path]) -> list[Conversation]:
    found = []
    for path in paths:
        for conversation in json.loads(path.read_text(encoding="utf-8")).values():
            turns = [(turn["agent"], turn["message"].strip()) for turn in conversation["content"]]
            found.append([(speaker, text) for speaker, text in turns if text])
    return found


def daily_dialogue_ja(paths: list[Path]) -> list[Conversation]:
    return [
        [(turn["speaker"], turn["utterance"].strip()) for turn in dialogue["utterances"]]
        for path in paths
        for dialogue in json.loads(path.read_text(encoding="utf-8"))
    ]


CORPORA: dict[str, Callable[[list[Path]], list[Conversation]]] = {
    "topical-chat": topical_chat,
    "daily-dialogue-ja": daily_dialogue_ja,
}


async def evaluate(conversations: list[Conversation], sample: int, whole: int, seed: int) -> None:
    messages = [text for conversation in conversations for _, text in conversation]
    singles = random.Random(seed).sample(messages, min(sample, len(messages)))
    chosen = random.Random(seed).sample(conversations, min(whole, len(conversations)))
    router = await open_router(
        config_for(Path(tempfile.mkdtemp()) / "eval.db"), Secrets(groq_api_key=None)
    )
    scores = {"single messages": Score(), "turns of conversations": Score()}
    openers = Score()
    misses: list[str] = []

    def note(score: Score, decision: RoutingDecision, text: str) -> None:
        bar = router.config.live_bar(decision.knn_swayed)
        score.add("cheap", "casual", decision.tier, decision.category, decision.confidence, bar)
        if decision.tier != "cheap":
            misses.append(
                f"  {decision.category!s:<13} {decision.confidence or 0:.2f}  {text[:90]!r}"
            )

    try:
        for text in singles:
            decision = await router.route(text)
            router.finish(decision, "routed")
            note(scores["single messages"], decision, text)
        for number, conversation in enumerate(chosen):
            at = 1_800_000_000.0 + number * 100_000
            for index, (speaker, text) in enumerate(conversation):
                at += GAP_S
                decision = await router.route(
                    text, conv_key=f"outside:{number}", at=at, user_key=f"outside:{speaker}"
                )
                router.finish(decision, "routed")
                note(scores["turns of conversations"], decision, text)
                if index == 0:
                    note(openers, decision, text)
    finally:
        await router.close()
    print(f"pool {router.pool_size} entries, live mode, no keys; 95% Wilson intervals")
    scores["of them, openers"] = openers
    for name, score in scores.items():
        print(score.row(name, measure="cheap"))
        print(score.calibration_row(""))
    print("not cheap (category, confidence, text):")
    print("\n".join(misses))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("corpus", choices=sorted(CORPORA))
    parser.add_argument("paths", nargs="+", type=Path)
    parser.add_argument("--sample", type=int, default=500, help="single messages drawn")
    parser.add_argument("--conversations", type=int, default=60, help="whole ones routed")
    parser.add_argument("--seed", type=int, default=7)
    add_head_seed(parser)
    args = parser.parse_args()
    use_head_seed(args.head_seed)
    conversations = CORPORA[args.corpus](args.paths)
    asyncio.run(evaluate(conversations, args.sample, args.conversations, args.seed))


if __name__ == "__main__":
    main()
