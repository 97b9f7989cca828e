"""A reply to the bot's answer finds the request that answer answered in the history, whatever
part of the answer the chat client quoted and however it showed its Markdown."""

from __future__ import annotations

import pytest

from bot.adapters.telegram_markdown import convert
from bot.incoming import answer_shown
from router.text import answer_to, answered_request, remembered_words

POEM = "Leaves of amber, leaves of red,\nfalling softly on the bed.\n\n**Happy birthday, Grandma!**"
CODE = (
    "Here is one that keeps the order:\n\n```python\ndef dedupe(xs):\n"
    "    return list(dict.fromkeys(xs))\n```\n\nSee [the docs](https://docs.python.org/3/) for"
    " dict ordering & more. It works on any list of hashable items, strings or numbers alike,"
    " and leaves the list you pass in as it was."
)
HISTORY = [
    {"role": "user", "content": "write a poem for grandma", "name": "Dad"},
    {"role": "assistant", "content": POEM},
    {"role": "user", "content": "remove duplicates from a list in python", "name": "Mom"},
    {"role": "assistant", "content": [{"type": "text", "text": CODE}]},
    {"role": "user", "content": "thanks!"},
    {"role": "assistant", "content": "You're welcome, happy birthday to grandma!"},
]


@pytest.mark.parametrize(
    ("answer", "asker"),
    [(POEM, "Dad"), (CODE, "Mom"), ("You're welcome, happy birthday to grandma!", None)],
)
def test_an_answer_as_telegram_shows_it_names_its_request(answer, asker) -> None:
    # Telegram quotes the text as shown: fences, their language, link addresses and entities gone.
    shown, _ = convert(answer)
    assert (answered_request(HISTORY, shown) or {}).get("name") == asker


def test_a_later_piece_of_a_long_answer_still_matches() -> None:
    piece = "It works on any list of hashable items, strings or numbers alike, and leaves the list"
    assert answered_request(HISTORY, piece) == HISTORY[2]


def test_the_answer_holding_the_whole_quote_wins_over_a_newer_one_holding_a_part() -> None:
    # The newest answer holds "happy birthday ... grandma" too, but only the poem holds it all.
    assert answered_request(HISTORY, "falling softly on the bed. Happy birthday") == HISTORY[0]


def test_a_quote_no_answer_holds_is_no_request() -> None:
    assert answered_request(HISTORY, "an answer memory forgot long ago") is None
    assert answered_request(HISTORY, "🙂") is None
    # In the poem and the code answer: too short to tell (six CJK characters are enough).
    assert answered_request(HISTORY, "Leaves of") is None
    assert (
        answered_request(
            [*HISTORY[:1], {"role": "assistant", "content": "秋天的落葉"}], "秋天的落葉"
        )
        is None
    )
    cjk = [*HISTORY[:1], {"role": "assistant", "content": "給奶奶的秋天落葉詩"}]
    assert answered_request(cjk, "奶奶的秋天落葉") == HISTORY[0]
    assert answered_request([], POEM) is None
    assert answered_request(None, POEM) is None


@pytest.mark.parametrize(
    ("remembered", "words"),
    [
        ("add two numbers in python", "add two numbers in python"),
        ("[voice] add two numbers in python", "add two numbers in python"),
        ('fix this (replying to Dad: "Traceback (most recent call last): …")', "fix this"),
        ("[photo: what plant is this?]", "what plant is this?"),
        ("[photo]", ""),
    ],
)
def test_a_remembered_request_reads_as_the_words_the_router_routed(remembered, words) -> None:
    assert remembered_words(remembered) == words


def test_an_answer_to_a_voice_message_matches_without_its_heading() -> None:
    history = [
        {"role": "user", "name": "Grandma", "content": "[voice] 明天台北會下雨嗎"},
        {"role": "assistant", "content": "明天台北午後有雷陣雨，記得帶傘。"},
    ]
    shown = "> [voice 0:04] 明天台北會下雨嗎\n\n明天台北午後有雷陣雨，記得帶傘。"
    assert answered_request(history, shown) is None  # the heading is not the answer's
    assert answered_request(history, answer_shown(shown)) == history[0]


def test_the_answer_to_a_message_is_found_under_memory_s_marks_and_only_for_its_speaker() -> None:
    """The bot's memory keeps a reply's reminder of what it quoted and a voice message's mark;
    the router read the words without them. A group's history names who asked what."""
    history = [
        {
            "role": "user",
            "name": "Mom",
            "content": '[voice] what about 20% (replying to Dad: "tip?")',
        },
        {"role": "assistant", "content": "16.90"},
        {"role": "user", "name": "Dad", "content": "what about 20%"},
        {"role": "assistant", "content": "it depends"},
    ]
    assert answer_to("what about 20%", history, 300, "Mom") == "16.90"
    assert answer_to("what about 20%", history, 300, "Dad") == "it depends"
    assert answer_to("what about 20%", history, 300) == "it depends"  # the newest, unnamed
    assert answer_to("and 25%?", history, 300, "Mom") is None
