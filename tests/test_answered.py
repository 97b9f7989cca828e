"""A reply to the bot's answer finds the request that answer answered in memory, whatever part
of the answer the chat client quoted and however it showed its Markdown."""

from __future__ import annotations

from bot.answered import answered_request, request_words
from bot.memory import Turn

POEM = "Leaves of amber, leaves of red,\nfalling softly on the bed.\n\n**Happy birthday, Grandma!**"
CODE = "```python\ndef add(a, b):\n    return a + b\n```\nCall `add(2, 3)` to get 5. " + "x" * 300
HISTORY = [
    Turn("user", "write a poem for grandma", "Dad"),
    Turn("assistant", POEM + " A book of leaves."),
    Turn("user", '[voice] add two numbers in python (replying to Mom: "can you do it")', "Mom"),
    Turn("assistant", CODE),
]


def test_the_quoted_answer_names_its_request_and_its_asker() -> None:
    shown = "Leaves of amber, leaves of red,\nfalling softly on the bed.\n\nHappy birthday, Gran"
    assert answered_request(HISTORY, shown) == HISTORY[0]


def test_a_later_piece_of_a_long_answer_shown_without_markdown_still_matches() -> None:
    piece = "Call add(2, 3) to get 5. " + "x" * 120
    question = answered_request(HISTORY, piece)
    assert question == HISTORY[2]
    # The router reads the words it routed, without what memory added around them.
    assert request_words(question) == "add two numbers in python"


def test_a_quote_no_answer_in_memory_holds_is_no_request() -> None:
    assert answered_request(HISTORY, "an answer memory forgot long ago") is None
    assert answered_request(HISTORY, "🙂") is None
    assert answered_request(HISTORY, "OK") is None  # in "bOoK": too short to tell
    assert answered_request([], POEM) is None
