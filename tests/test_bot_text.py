"""Pure text helpers of the bot: message splitting and language detection."""

from __future__ import annotations

import pytest

from bot.language import APOLOGIES, apology, detect_language
from bot.memory import estimate_tokens
from bot.split import split_message, utf16_units
from tests.fence_helpers import open_fence, without_fence_lines


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


def test_a_code_block_cut_in_two_is_closed_and_opened_again():
    text = (
        "Try this:\n```python\ndef total(*prices):\n    # add them up\n    result = 0\n"
        "    for price in prices:\n        result += price\n    return result\n```\nThat is all."
    )
    # Each piece reads as code on its own, and the code keeps its indentation.
    assert split_message(text, 70) == [
        "Try this:\n```python\ndef total(*prices):\n    # add them up\n```",
        "```python\n    result = 0\n    for price in prices:\n```",
        "```python\n        result += price\n    return result\n```\nThat is all.",
    ]


def test_a_code_block_that_starts_late_goes_whole_to_the_next_piece():
    intro = "A first paragraph that explains what the function does, at length:"
    code = "```python\ndef total(*prices):\n    return sum(prices)\n```"
    assert split_message(f"{intro}\n{code}", 100) == [intro, code]


def test_fences_close_as_in_commonmark():
    # A ~~~~ block with an info string holds a ``` line; only a ~~~~ (or longer) line closes it.
    code = "\n".join(f"line{n}" for n in range(7))
    text = f"~~~~ js title\n{code}\n```\nstill code\n~~~~~\nafter text here"
    assert split_message(text, 60) == [
        "~~~~ js title\nline0\nline1\nline2\nline3\nline4\nline5\nline6\n~~~~",
        "~~~~ js title\n```\nstill code\n~~~~~\nafter text here",
    ]
    # A block in a list item is closed at its own indentation, so it stays in the item.
    steps = "\n".join(f"   pip install pkg{n}" for n in range(4))
    listed = f"1. Install:\n   ```bash\n{steps}\n   ```\n2. Done"
    assert split_message(listed, 80) == [
        "1. Install:\n   ```bash\n   pip install pkg0\n   pip install pkg1\n   ```",
        "   ```bash\n   pip install pkg2\n   pip install pkg3\n   ```\n2. Done",
    ]


def test_a_block_cut_just_before_its_closing_line_ends_there():
    code = "ab\n```\n" + "x" * 20 + "\n" + "y" * 20
    # The piece's own closing line stands for the block's: no empty block opens the next piece.
    assert split_message(code + "\n\n```\nafter words and more words", 52) == [
        code + "\n```",
        "after words and more words",
    ]


CODE_LINES = "\n".join(f"    value_{n} = parse(row[{n}], *args)  # field {n}" for n in range(300))


@pytest.mark.parametrize(
    ("text", "measure", "fenced"),
    [
        ("intro\n```python\n" + CODE_LINES + "\n```\noutro", len, True),
        ("intro\n```python\n" + CODE_LINES, len, True),  # never closed
        ("```\nx = 1\n```\n" * 3000, len, True),
        ("```\n" * 5000, len, True),
        ("```\n" + "x" * 9000 + "\n```", len, True),  # one code line over the limit
        ("```python\n" + "print('你好世界')  # 打招呼\n" * 400 + "```", utf16_units, True),
        ("```js\n" + "let face = '😀😀';\n" * 500 + "```", utf16_units, True),
        ("```\n" + "😀" * 5000 + "\n```", utf16_units, True),
        # An opening line too long to repeat in a piece is cut as plain text.
        ("```" + "a" * 9000 + "\nprint(1)\n```", len, False),
    ],
)
@pytest.mark.parametrize("limit", [50, 2000])
def test_split_of_hostile_code_ends_within_the_limit_and_loses_nothing(
    text, measure, fenced, limit
):
    pieces = split_message(text, limit, measure)
    assert all(0 < measure(piece) <= limit for piece in pieces)
    if fenced:
        assert all(open_fence(piece) is None for piece in pieces[:-1])
        assert "".join(map(without_fence_lines, pieces)) == without_fence_lines(text)
    else:  # cut as plain text: nothing added
        assert "".join("".join(pieces).split()) == "".join(text.split())


def test_a_limit_below_one_character_still_ends():
    assert split_message("😀😀", 1, utf16_units) == ["😀", "😀"]


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
