"""Pure text helpers of the bot: message splitting and language detection."""

from __future__ import annotations

import pytest

from bot.language import APOLOGIES, apology, detect_language
from bot.memory import estimate_tokens
from bot.split import split_message


def test_short_text_is_one_piece():
    assert split_message("  hello  ", 10) == ["hello"]
    assert split_message("", 10) == []


def test_split_prefers_paragraphs_then_sentences():
    text = "First paragraph here.\n\nSecond one. It has two sentences."
    assert split_message(text, 40) == ["First paragraph here.", "Second one. It has two sentences."]
    assert split_message("One. Two. Three. Four.", 10) == ["One. Two.", "Three.", "Four."]


def test_split_handles_cjk_and_unbroken_text():
    text = "今天天气很好。我们去公园吧！好的。"
    pieces = split_message(text, 8)
    assert pieces == ["今天天气很好。", "我们去公园吧！", "好的。"]
    assert split_message("x" * 25, 10) == ["x" * 10, "x" * 10, "x" * 5]


@pytest.mark.parametrize("limit", [50, 200, 2000, 4096])
def test_split_never_exceeds_the_limit_and_loses_nothing(limit):
    text = "\n\n".join(
        f"Paragraph {n}. " + "Some words, and a sentence! " * (n % 13) for n in range(300)
    )
    pieces = split_message(text, limit)
    assert all(0 < len(piece) <= limit for piece in pieces)
    assert " ".join(pieces).split() == text.split()


@pytest.mark.parametrize(
    ("text", "language"),
    [
        ("What's for dinner?", "en"),
        ("晚饭吃什么？", "zh-Hans"),
        ("這個問題怎麼寫？", "zh-Hant"),
        ("今日は何を食べる？", "ja"),
        ("明日の天気", "ja"),
        ("123 !!", "en"),
    ],
)
def test_language_and_apology(text, language):
    assert detect_language(text) == language
    assert apology(text) == APOLOGIES[language]


def test_token_estimate_counts_cjk_as_dense():
    assert estimate_tokens("你好" * 100) > estimate_tokens("hi" * 100)
