"""The shipped seed pool and the held-out dev set: size, balance, languages, no near-duplicates,
and no overlap between them."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from router.taxonomy import MAPPING_V2
from router.text import normalize_text
from tests.db_helpers import fetch_sync

ROOT = Path(__file__).resolve().parent.parent
SEED = ROOT / "router" / "data" / "seed_pool.jsonl"
DEV = ROOT / "tests" / "data" / "dev_set.jsonl"
TEST = ROOT / "tests" / "data" / "test_set.jsonl"
TRAIN_CONVERSATIONS = ROOT / "router" / "data" / "train_conversations.jsonl"


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


@pytest.fixture(scope="module")
def seed() -> list[dict]:
    return read_jsonl(SEED)


@pytest.fixture(scope="module")
def dev() -> list[dict]:
    return read_jsonl(DEV)


def dev_texts(dev: list[dict]) -> list[str]:
    texts = [row["text"] for row in dev if "text" in row]
    return texts + [turn["text"] for row in dev if "turns" in row for turn in row["turns"]]


def test_seed_pool_size_balance_and_languages(seed):
    assert len(seed) >= 2500
    categories = Counter(row["category"] for row in seed)
    assert set(categories) <= set(MAPPING_V2)
    for category in MAPPING_V2:
        if category != "unknown":
            assert categories[category] >= 80, category
    languages = Counter(row["lang"] for row in seed)
    share = {lang: count / len(seed) for lang, count in languages.items()}
    # 0.348 since Japanese in the polite register joined (2026-12-06)
    assert 0.33 <= share["zh-Hant"] + share["zh-Hans"] <= 0.50
    assert min(share["zh-Hant"], share["zh-Hans"]) >= 0.15
    assert 0.25 <= share["en"] <= 0.40
    assert share["ja"] >= 0.20
    # Families who mix languages in one message (Chinese or Japanese around English code too).
    assert 0.03 <= share["mixed"] <= 0.15


def test_seed_pool_has_no_near_duplicates(seed, seeded_db):
    """Read the vectors the real bundled model made when the pool was seeded."""
    rows = fetch_sync(seeded_db, "SELECT embedding, text FROM pool ORDER BY id")
    assert len(rows) == len(seed), "every seed message is pooled once"
    vectors = np.frombuffer(b"".join(row[0] for row in rows), dtype=np.float32)
    vectors = vectors.reshape(len(rows), -1)
    similarity = vectors @ vectors.T
    np.fill_diagonal(similarity, 0.0)
    i, j = np.unravel_index(np.argmax(similarity), similarity.shape)
    assert similarity[i, j] < 0.95, (rows[i][1], rows[j][1], float(similarity[i, j]))


def test_dev_set_is_held_out_and_has_conversations(seed, dev):
    singles = [row for row in dev if "text" in row]
    conversations = [row for row in dev if "turns" in row]
    assert len(singles) >= 200 and len(conversations) >= 20
    assert all(len(row["turns"]) >= 2 for row in conversations)
    for row in conversations:
        assert all(isinstance(turn["gap_s"], int | float) for turn in row["turns"])
    pooled = {normalize_text(row["text"]) for row in seed}
    overlap = [text for text in dev_texts(dev) if normalize_text(text) in pooled]
    assert overlap == []


def test_dev_set_is_not_near_any_seed_message(seed, dev, embedder, seeded_db):
    blobs = [row[0] for row in fetch_sync(seeded_db, "SELECT embedding FROM pool")]
    pool = np.frombuffer(b"".join(blobs), dtype=np.float32).reshape(len(blobs), -1)
    singles = [row["text"] for row in dev if "text" in row]
    closest = (embedder.embed(singles) @ pool.T).max(axis=1)
    assert float(closest.max()) < 0.95, singles[int(np.argmax(closest))]


def test_frozen_test_split_is_apart_from_the_pool_and_covers_every_language(seed):
    test = read_jsonl(TEST)
    singles = [row for row in test if "text" in row]
    conversations = [row for row in test if "turns" in row]
    assert len(singles) >= 500 and len(conversations) >= 80
    languages = Counter(row["lang"] for row in singles)
    assert (
        min(
            languages[lang]
            for in_lang in [("zh-Hant", "zh-Hans", "en", "ja", "mixed")]
            for lang in in_lang
        )
        >= 40
    )
    kinds = Counter(turn["kind"] for row in conversations for turn in row["turns"][1:])
    assert kinds["continue"] >= 100 and kinds["switch"] >= 60
    pooled = {normalize_text(row["text"]) for row in seed}
    assert [row["text"] for row in singles if normalize_text(row["text"]) in pooled] == []


def test_training_conversations_label_every_follow_up():
    conversations = read_jsonl(TRAIN_CONVERSATIONS)
    follow_ups = [turn for row in conversations for turn in row["turns"][1:] if "kind" in turn]
    assert len(conversations) >= 400 and len(follow_ups) >= 1200
    assert {turn["kind"] for turn in follow_ups} == {"continue", "switch"}
    for row in conversations:
        turns = row["turns"]
        assert turns[0]["gap_s"] == 0 and "kind" not in turns[0]
        for index, turn in enumerate(turns[1:], start=1):
            assert turn["category"] in MAPPING_V2 and turn["gap_s"] >= 0
            # A turn's context: the turn it replies to, else its speaker's previous turn.
            context = turn.get("reply_to")
            if context is None:
                same = [i for i in range(index) if turns[i].get("speaker") == turn.get("speaker")]
                context = same[-1] if same else None
            assert ("kind" in turn) == (context is not None), (row["conversation"], turn["text"])
            if turn.get("kind") == "continue":
                assert turn["category"] == turns[context]["category"], (
                    row["conversation"],
                    turn["text"],
                )
    by_language = Counter(row["lang"] for row in conversations)
    assert set(by_language) == {"zh-Hant", "zh-Hans", "en", "ja", "mixed"}


def test_pool_rows_are_grouped_by_writer_for_cross_validation():
    """A pooled turn goes with its conversation's writer, a marked single message with its
    mark (the same writer's conversations when the names agree), anything else with none;
    conversation writers keep the numbers of their folds."""
    from scripts.conversations import writer_groups

    conversations = [
        {"conversation": "tr2-en-001", "turns": [{"text": "can you fix my regex"}]},
        {"conversation": "tr-zh-001", "turns": [{"text": "早安"}]},
    ]
    rows = [
        {"text": "早安"},
        {"text": "can you fix my regex", "writer": "pasted"},
        {"text": "Traceback (most recent call last)", "writer": "pasted"},
        {"text": "a reply from the first pool"},
        {"text": "what a week", "writer": "tr2"},
    ]
    assert writer_groups(conversations, rows).tolist() == [0, 1, 2, -1, 1]


def test_shipped_single_messages_of_known_writers_carry_their_mark(seed):
    marks = Counter(row["writer"] for row in seed if "writer" in row)
    assert set(marks) == {"tr7", "pasted", "lookalike", "smalltalk", "polite_ja"}
    assert min(marks.values()) >= 200
